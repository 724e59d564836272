//! `bak backup create [--output PATH]` and `bak backup restore ARCHIVE [--force]`.
//!
//! A backup is one `.tar.gz`: the database as of one commit (`VACUUM INTO`, safe while the
//! server runs and writes), the storage folder, and `manifest.json` (last member) with the
//! Bakend and schema versions, the time the backup began, counts, and the size and SHA-256 of
//! every other member. Restore refuses while a server runs (the database lock), checks the
//! archive against its manifest and the free space against the declared sizes
//! (`backup_archive`), extracts into a temporary folder beside the database checking every
//! size and checksum, runs SQLite's integrity check, and only then swaps the database (after
//! removing the old one's `-wal` and `-shm`) and the storage folder into place by renaming.
//!
//! With `storage.s3` the archive is the same too: `create` downloads the object of every file
//! row of the snapshot into `storage/files/<id>`, and `restore` uploads them into the
//! configured bucket (before the database is swapped in or committed, so no row comes back
//! without its blob). So a backup also moves a project between the storage folder and a bucket.
//!
//! On PostgreSQL the archive is the same: `create` writes the database as a SQLite file from
//! one `REPEATABLE READ` snapshot, `restore` copies the archive's file into the schema in one
//! transaction (`bakend_store::db::copy`). So a backup restores into either store, which is
//! how a project moves from SQLite to PostgreSQL (docs/postgres.md).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use bakend_core::config::{Config, DatabaseLocation, PostgresSettings};
use bakend_storage::{BlobStore, Spooled};
use bakend_store::backup_manifest::{FORMAT, FORMAT_VERSION, MANIFEST};
use bakend_store::db::{DbLock, copy, migrations, snapshot};
use bakend_store::sql::Conn;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::backup_archive;
use crate::cli::Cli;

/// Inside the storage folder: uploads in progress, never part of a backup.
const STORAGE_TMP: &str = "tmp";

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Passes bytes through while hashing and counting them.
pub(crate) struct Hashing<R> {
    pub(crate) inner: R,
    pub(crate) hash: Sha256,
    pub(crate) size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Where the project keeps its data.
enum Store<'c> {
    File(PathBuf),
    Postgres(&'c PostgresSettings),
}

fn store(config: &Config) -> anyhow::Result<Store<'_>> {
    match &config.database {
        DatabaseLocation::File(p) => Ok(Store::File(p.clone())),
        DatabaseLocation::Memory => bail!("Database file not found: :memory:"),
        DatabaseLocation::Postgres(settings) => Ok(Store::Postgres(settings)),
    }
}

/// The bucket of `storage.s3`, for the blocking [`BlobStore`] calls of this (non-async) thread;
/// its requests run on a runtime of its own.
struct Bucket {
    blobs: Arc<dyn BlobStore>,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    /// `None` when the project keeps its files in the storage folder.
    fn open(config: &Config) -> anyhow::Result<Option<Bucket>> {
        let Some(s3) = &config.s3 else {
            return Ok(None);
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("Cannot start the async runtime")?;
        let blobs = runtime.block_on(bakend_storage::open_blobs(&config.storage, Some(s3)))?;
        Ok(Some(Bucket { blobs, runtime }))
    }

    /// Downloads blob `id` into `dest`; `false` if there is no such object.
    fn download(&self, id: &str, dest: &Path) -> anyhow::Result<bool> {
        let Some(mut blob) = self.blobs.open(id, 0)? else {
            return Ok(false);
        };
        self.runtime.block_on(async {
            let mut file = tokio::fs::File::create(dest).await?;
            tokio::io::copy(&mut blob.reader, &mut file).await?;
            file.sync_all().await
        })?;
        Ok(true)
    }

    fn holds_files(&self) -> anyhow::Result<bool> {
        Ok(!self.blobs.list()?.is_empty())
    }

    /// Uploads the extracted `storage/files/*` into the bucket (an object already there with
    /// the same id is replaced; others stay, for `bak storage prune`).
    fn upload_storage(&self, work: &TempDir) -> anyhow::Result<usize> {
        let storage = work.0.join("storage");
        let mut n = 0;
        for rel in storage_files(&storage)? {
            let name = archive_name(&rel);
            let id = match name.strip_prefix("files/") {
                Some(id) if !id.contains('/') => id,
                _ => {
                    eprintln!(
                        "Warning: storage/{name} is not a file's blob: not restored into the bucket"
                    );
                    continue;
                }
            };
            let spooled = Spooled::adopt(storage.join(&rel))?;
            self.blobs
                .put(id, spooled)
                .with_context(|| format!("Cannot upload file {id} into the bucket"))?;
            n += 1;
        }
        Ok(n)
    }
}

/// A folder removed when dropped (the staging and extraction folders).
struct TempDir(PathBuf);

impl TempDir {
    fn create(parent: &Path, prefix: &str) -> anyhow::Result<TempDir> {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let path = parent.join(format!("{prefix}{ms}-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("Cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every regular file under `root` (relative paths, sorted), skipping `root/tmp`.
fn storage_files(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries = match std::fs::read_dir(root.join(&rel)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = rel.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if path != Path::new(STORAGE_TMP) {
                    stack.push(path);
                }
            } else if kind.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn archive_name(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    source: &Path,
) -> io::Result<(String, u64)> {
    let file = File::open(source)?;
    let size = file.metadata()?.len();
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    let mut r = Hashing {
        inner: file.take(size),
        hash: Sha256::new(),
        size: 0,
    };
    tar.append_data(&mut header, name, &mut r)?;
    if r.size != size {
        return Err(io::Error::other(format!(
            "{name} changed size while it was read"
        )));
    }
    Ok((hex(&r.hash.finalize()), size))
}

pub fn create(cli: &Cli, output: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref(), &|k| std::env::var(k).ok())?;
    let store = store(&config)?;
    if let Store::File(db_path) = &store
        && !db_path.exists()
    {
        bail!("Database file not found: {}", db_path.display());
    }
    let started = bakend_core::time::now_iso();
    let project = &config.project_dir;
    let output = match output {
        Some(p) => project.join(p),
        None => project.join(format!(
            "bakend-backup-{}.tar.gz",
            started.replace([':', '.'], "-")
        )),
    };
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("Cannot create {}", parent.display()))?;
    }
    // The bucket is checked before anything is written.
    let bucket = Bucket::open(&config)?;
    let staging = TempDir::create(project, ".bakend-backup-")?;
    let db_name = match &store {
        Store::File(db_path) => db_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bakend.db".into()),
        Store::Postgres(_) => "bakend.db".into(),
    };

    // The database first: every record committed before this point is in the snapshot. From
    // PostgreSQL it is written as the same SQLite file (docs/postgres.md, "Backups").
    let snap = staging.0.join(&db_name);
    match &store {
        Store::File(db_path) => {
            snapshot::snapshot(db_path, &snap).context("Database snapshot failed")?
        }
        Store::Postgres(settings) => {
            snapshot::snapshot_postgres(settings, &snap).context("Database snapshot failed")?;
        }
    }
    let counts = snapshot::counts(&snap)?;

    let partial = output.with_extension("partial");
    let file =
        File::create(&partial).with_context(|| format!("Cannot create {}", partial.display()))?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::default(),
    ));
    let (db_sha, db_size) = append(&mut tar, &db_name, &snap)?;

    // Then the storage folder (or the bucket's objects of the snapshot's files). Blobs are
    // written before their row commits, so every file row in the snapshot has its blob, unless
    // it was deleted since: that is reported.
    let mut stored = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    if let Some(bucket) = &bucket {
        let local = staging.0.join("blob");
        for id in &counts.file_ids {
            if bucket.download(id, &local)? {
                let name = format!("storage/files/{id}");
                let (sha, size) = append(&mut tar, &name, &local)?;
                stored.push(json!({"path": name, "size": size, "sha256": sha}));
            }
        }
    } else {
        for rel in storage_files(&config.storage)? {
            let name = format!("storage/{}", archive_name(&rel));
            match append(&mut tar, &name, &config.storage.join(&rel)) {
                Ok((sha, size)) => stored.push(json!({"path": name, "size": size, "sha256": sha})),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    warnings.push(format!("{name} was deleted while the backup ran"));
                }
                Err(e) => return Err(e).with_context(|| format!("Cannot read {name}")),
            }
        }
    }
    for id in &counts.file_ids {
        let name = format!("storage/files/{id}");
        if !stored.iter().any(|s| s["path"] == name.as_str()) {
            warnings.push(format!(
                "file {id} has no stored content (deleted during the backup?)"
            ));
        }
    }

    let manifest = json!({
        "format": FORMAT,
        "formatVersion": FORMAT_VERSION,
        "bakendVersion": bakend_core::VERSION,
        "schemaVersion": counts.schema_version,
        "createdAt": started,
        "database": {"path": db_name, "size": db_size, "sha256": db_sha},
        "counts": {
            "collections": counts.collections,
            "records": counts.records,
            "users": counts.users,
            "files": counts.files,
        },
        "storage": stored,
        "warnings": warnings,
    });
    let text = serde_json::to_vec_pretty(&manifest)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, MANIFEST, text.as_slice())?;
    let file = tar.into_inner()?.finish()?;
    file.sync_all()?;
    std::fs::rename(&partial, &output)
        .with_context(|| format!("Cannot write {}", output.display()))?;
    for w in &warnings {
        eprintln!("Warning: {w}");
    }
    println!("Backup created: {}", output.display());
    Ok(())
}

/// The extracted database is sound, and starts a new journal epoch.
fn check_database(db: &Path) -> anyhow::Result<()> {
    snapshot::integrity_check(db).map_err(|e| anyhow!("The backed-up database is damaged: {e}"))?;
    new_journal_epoch(db)
}

/// A restored database continues an older history than the one realtime clients may have
/// followed: dropping the journal epoch makes the next start begin a new one, so clients
/// resuming with sequence numbers from after the backup are told to refetch.
fn new_journal_epoch(db: &Path) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(db)?;
    let has_meta: bool = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_bakend_meta'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if has_meta {
        conn.execute(
            "DELETE FROM _bakend_meta WHERE key = ?1",
            [bakend_store::db::journal::EPOCH_KEY],
        )?;
    }
    Ok(())
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Renames, or copies then removes when `from` and `to` are on different file systems.
fn move_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    copy_dir(from, to)?;
    std::fs::remove_dir_all(from)?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn non_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut e| e.next().is_some())
}

pub fn restore(cli: &Cli, archive: &Path, force: bool) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref(), &|k| std::env::var(k).ok())?;
    let archive = config.project_dir.join(archive);
    if !archive.is_file() {
        bail!("Backup archive not found: {}", archive.display());
    }
    match store(&config)? {
        Store::File(db_path) => restore_file(&config, &db_path, &archive, force),
        Store::Postgres(settings) => restore_postgres(&config, settings, &archive, force),
    }
}

const EXISTS: &str = "Target database or storage already exists. Re-run with --force to overwrite.";

fn restore_file(
    config: &Config,
    db_path: &Path,
    archive: &Path,
    force: bool,
) -> anyhow::Result<()> {
    // Held until the end: no server may start on a half-restored project.
    let _lock = DbLock::acquire_or(db_path, "Cannot restore while the database is in use")?;
    let bucket = Bucket::open(config)?;
    if !force && (db_path.exists() || storage_in_use(config, bucket.as_ref())?) {
        bail!(EXISTS);
    }

    let db_dir = db_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| config.project_dir.clone());
    std::fs::create_dir_all(&db_dir)?;
    let (work, new_db) = extract_checked(archive, &db_dir)?;
    File::open(&new_db)?.sync_all()?;

    // Storage first, then the database; each is a rename (the blobs: uploads into the bucket).
    restore_storage(config, bucket.as_ref(), &work)?;

    // An old WAL next to the new database would be replayed into it: fold it into the old
    // database (harmless if that fails, it is being replaced), then remove it.
    if db_path.exists() {
        let _ = snapshot::checkpoint(db_path);
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        match std::fs::remove_file(sidecar(db_path, suffix)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context(format!("Cannot remove the old database's {suffix}")),
        }
    }
    std::fs::rename(&new_db, db_path)
        .with_context(|| format!("Cannot move the database into {}", db_path.display()))?;
    if let Ok(dir) = File::open(&db_dir) {
        let _ = dir.sync_all();
    }
    println!("Backup restored.");
    Ok(())
}

/// Into PostgreSQL (also how a SQLite project moves there): the archive's SQLite file is
/// checked and brought to this build's schema, then copied into the schema in one
/// transaction that replaces what was there; it commits after the storage folder is in place.
fn restore_postgres(
    config: &Config,
    settings: &PostgresSettings,
    archive: &Path,
    force: bool,
) -> anyhow::Result<()> {
    // Held until the end: no server may start on a half-restored project.
    let _lock =
        DbLock::acquire_postgres_or(settings, "Cannot restore while the database is in use")?;
    let target = bakend_store::db::connect_postgres(settings)?;
    let bucket = Bucket::open(config)?;
    if !force && (copy::holds_data(&target)? || storage_in_use(config, bucket.as_ref())?) {
        bail!(EXISTS);
    }
    std::fs::create_dir_all(&config.project_dir)?;
    let (work, new_db) = extract_checked(archive, &config.project_dir)?;
    let source = Conn::from(rusqlite::Connection::open(&new_db)?);
    migrations::migrate(&source).context("Cannot bring the backed-up database up to date")?;

    target.execute_batch("BEGIN")?;
    // The copy has no journal epoch (`check_database` dropped it): the next start begins a
    // new history for realtime clients, as on SQLite.
    let copied = copy::copy_database(&source, &target)
        .context("Copying the backup into PostgreSQL failed; nothing was changed")?;
    restore_storage(config, bucket.as_ref(), &work)?;
    target
        .execute_batch("COMMIT")
        .context("Committing the restored database failed")?;
    println!(
        "Backup restored into PostgreSQL: {} collection(s), {} record(s), {} journaled event(s).",
        copied.collections, copied.records, copied.events
    );
    Ok(())
}

/// Checks the archive against its manifest and the free space in `dir`, extracts it into a
/// temporary folder there, and checks the database it holds: the folder and the database.
fn extract_checked(archive: &Path, dir: &Path) -> anyhow::Result<(TempDir, PathBuf)> {
    // Everything is checked against the manifest before anything is written, and extraction
    // never writes more than it declares (see backup_archive).
    let manifest = backup_archive::read_manifest(archive)?;
    backup_archive::ensure_free_space(dir, manifest.total)?;
    let work = TempDir::create(dir, ".bakend-restore-")?;
    backup_archive::extract(archive, &work.0, &manifest)?;
    let new_db = work.0.join(&manifest.db_name);
    check_database(&new_db)?;
    Ok((work, new_db))
}

/// Whether the project already keeps files: in its bucket, or its storage folder.
fn storage_in_use(config: &Config, bucket: Option<&Bucket>) -> anyhow::Result<bool> {
    match bucket {
        Some(b) => b.holds_files(),
        None => Ok(non_empty_dir(&config.storage)),
    }
}

/// The extracted blobs into the bucket, or the extracted folder in place of the project's.
fn restore_storage(config: &Config, bucket: Option<&Bucket>, work: &TempDir) -> anyhow::Result<()> {
    match bucket {
        Some(b) => {
            let n = b.upload_storage(work)?;
            println!("Uploaded {n} file(s) into the bucket.");
            Ok(())
        }
        None => replace_storage(config, work),
    }
}

/// Puts the extracted storage folder in place of the project's (a rename when it can).
fn replace_storage(config: &Config, work: &TempDir) -> anyhow::Result<()> {
    let new_storage = work.0.join("storage");
    if !new_storage.exists() {
        std::fs::create_dir_all(&new_storage)?;
    }
    if let Some(parent) = config.storage.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let old_storage = sidecar(&config.storage, ".replaced");
    let _ = std::fs::remove_dir_all(&old_storage);
    if config.storage.exists() {
        std::fs::rename(&config.storage, &old_storage).with_context(|| {
            format!(
                "Cannot move the old storage folder {}",
                config.storage.display()
            )
        })?;
    }
    move_dir(&new_storage, &config.storage)?;
    let _ = std::fs::remove_dir_all(&old_storage);
    Ok(())
}
