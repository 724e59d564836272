//! Reading a backup archive for `bak backup restore` without trusting it (issue 14 #8: a
//! 2.3 MB archive once expanded to 512 MB).
//!
//! The manifest is the archive's last member, so restore reads the archive twice:
//! 1. [`read_manifest`] decompresses it to the end writing nothing, parses the manifest, and
//!    checks every member's tar header against it: each is listed, none twice, none larger
//!    than declared, none missing. The caller then checks free space against the declared
//!    total ([`ensure_free_space`]).
//! 2. [`extract`] writes each member, stopping any that exceeds its declared size the moment
//!    it does, and checks its size and SHA-256 as it is written.
//!
//! No ratio or absolute cap is applied: an archive that matches its manifest restores
//! whatever its size, compression ratio or manifest size.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path};

use anyhow::{Context, anyhow, bail};
use sha2::{Digest, Sha256};

use bakend_store::backup_manifest::{self, MANIFEST, Member};

use crate::backup::{Hashing, hex};

/// A member the manifest lists.
#[derive(Debug)]
pub(crate) struct Declared {
    pub size: u64,
    pub sha256: String,
}

/// What the manifest promises about the archive.
#[derive(Debug)]
pub(crate) struct Manifest {
    /// The database member's name (a plain file name).
    pub db_name: String,
    /// Every member the manifest lists (the database and each `storage/…` file).
    pub members: BTreeMap<String, Declared>,
    /// The sum of the declared sizes: what extraction writes to disk.
    pub total: u64,
}

impl Manifest {
    /// The manifest's text, read by the one manifest reader (`bakend_store::backup_manifest`,
    /// which the fuzz target exercises), then held to what a restore needs: every member with
    /// a size and a SHA-256, listed once, sizes that add up.
    fn parse(text: &[u8]) -> anyhow::Result<Manifest> {
        let listed = backup_manifest::parse(text)?;
        let mut manifest = Manifest {
            db_name: listed.database.path.clone(),
            members: BTreeMap::new(),
            total: 0,
        };
        manifest.add(&listed.database)?;
        for s in &listed.storage {
            manifest.add(s)?;
        }
        Ok(manifest)
    }

    fn add(&mut self, member: &Member) -> anyhow::Result<()> {
        let name = member.path.clone();
        let size = member
            .size
            .ok_or_else(|| anyhow!("The backup manifest gives no size for {name}"))?;
        let sha256 = member
            .sha256
            .as_deref()
            .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| anyhow!("The backup manifest gives no SHA-256 for {name}"))?
            .to_ascii_lowercase();
        self.total = self
            .total
            .checked_add(size)
            .ok_or_else(|| anyhow!("The backup manifest declares an impossible total size"))?;
        if self
            .members
            .insert(name.clone(), Declared { size, sha256 })
            .is_some()
        {
            bail!("The backup manifest lists {name} twice");
        }
        Ok(())
    }

    fn declared(&self, name: &str) -> anyhow::Result<&Declared> {
        self.members
            .get(name)
            .ok_or_else(|| anyhow!("The backup holds {name}, which its manifest does not list"))
    }
}

/// A member's path as one `/`-joined name, `.` parts dropped; `None` for anything that could
/// leave the extraction folder (absolute, `..`, prefixes) or is empty.
fn member_name(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

enum Kind {
    File,
    Dir,
}

/// The entry's safe name and kind; plain files and folders only.
fn checked_entry<R: Read>(entry: &tar::Entry<'_, R>) -> anyhow::Result<(String, Kind)> {
    let path = entry.path().context("The archive is damaged")?;
    let name = member_name(&path)
        .ok_or_else(|| anyhow!("The archive holds an unsafe path: {}", path.display()))?;
    let kind = match entry.header().entry_type() {
        tar::EntryType::Regular => Kind::File,
        tar::EntryType::Directory => Kind::Dir,
        other => bail!(
            "The archive holds an unexpected entry ({other:?}): {}",
            path.display()
        ),
    };
    Ok((name, kind))
}

fn open(archive: &Path) -> anyhow::Result<tar::Archive<flate2::read::GzDecoder<File>>> {
    let file = File::open(archive)
        .with_context(|| format!("Cannot read the archive {}", archive.display()))?;
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(file)))
}

fn too_large(name: &str, declared: u64) -> anyhow::Error {
    anyhow!(
        "The backup's {name} is larger than its manifest declares ({declared} bytes): the archive \
         is damaged or forged"
    )
}

/// Pass 1: reads the whole archive without writing anything and checks its members' headers
/// against its manifest (the last member).
pub(crate) fn read_manifest(archive: &Path) -> anyhow::Result<Manifest> {
    let mut tar = open(archive)?;
    let mut headers: Vec<(String, u64)> = Vec::new();
    let mut manifest: Option<Vec<u8>> = None;
    for entry in tar.entries().context("Not a .tar.gz archive")? {
        let mut entry = entry.context("The archive is damaged")?;
        let (name, kind) = checked_entry(&entry)?;
        if manifest.is_some() {
            bail!("The archive holds {name} after its {MANIFEST}: it is not a Bakend backup");
        }
        match kind {
            Kind::Dir => {}
            Kind::File if name == MANIFEST => {
                let mut text = Vec::new();
                entry
                    .read_to_end(&mut text)
                    .context("The archive is damaged")?;
                manifest = Some(text);
            }
            Kind::File => headers.push((name, entry.size())),
        }
    }
    let manifest = manifest
        .ok_or_else(|| anyhow!("The archive has no {MANIFEST}: it is not a Bakend backup"))?;
    let manifest = Manifest::parse(&manifest)?;
    let mut seen = HashSet::new();
    for (name, size) in &headers {
        let declared = manifest.declared(name)?;
        if !seen.insert(name.as_str()) {
            bail!("The backup holds {name} twice");
        }
        if *size > declared.size {
            return Err(too_large(name, declared.size));
        }
    }
    if let Some(missing) = manifest.members.keys().find(|n| !seen.contains(n.as_str())) {
        bail!("The backup is missing {missing}");
    }
    Ok(manifest)
}

/// Refuses when the file system holding `dir` has less room than `needed` bytes.
pub(crate) fn ensure_free_space(dir: &Path, needed: u64) -> anyhow::Result<()> {
    let free = free_bytes(dir)
        .with_context(|| format!("Cannot read the free space of {}", dir.display()))?;
    if needed > free {
        bail!(
            "Not enough free space to restore: the backup needs {needed} bytes ({}), {} has {free} \
             bytes ({}) free",
            human(needed),
            dir.display(),
            human(free)
        );
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Bytes an unprivileged process may still write on the file system holding `dir`.
fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string and `stat` points to writable memory of the right
    // type, which statvfs fills when it returns 0.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Pass 2: writes every listed member under `dest`, never more than its declared size, and
/// checks each one's size and SHA-256 as it is written.
pub(crate) fn extract(archive: &Path, dest: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let mut tar = open(archive)?;
    let mut written = HashSet::new();
    for entry in tar.entries().context("Not a .tar.gz archive")? {
        let mut entry = entry.context("The archive is damaged")?;
        let (name, kind) = checked_entry(&entry)?;
        if name == MANIFEST {
            // The last member, read in the first pass.
            break;
        }
        let target = dest.join(&name);
        let declared = match kind {
            Kind::Dir => {
                std::fs::create_dir_all(&target)
                    .with_context(|| format!("Cannot create {}", target.display()))?;
                continue;
            }
            Kind::File => manifest.declared(&name)?,
        };
        if !written.insert(name.clone()) {
            bail!("The backup holds {name} twice");
        }
        if entry.size() > declared.size {
            return Err(too_large(&name, declared.size));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("Cannot create {}", parent.display()))?;
        }
        let mut out =
            File::create(&target).with_context(|| format!("Cannot create {}", target.display()))?;
        // One byte past the declared size is enough to know it was exceeded.
        let mut r = Hashing {
            inner: (&mut entry).take(declared.size.saturating_add(1)),
            hash: Sha256::new(),
            size: 0,
        };
        io::copy(&mut r, &mut out).context("The archive is damaged")?;
        if r.size > declared.size {
            return Err(too_large(&name, declared.size));
        }
        if r.size != declared.size || hex(&r.hash.finalize()) != declared.sha256 {
            bail!("Checksum mismatch for {name}: the backup is damaged");
        }
    }
    if let Some(missing) = manifest.members.keys().find(|n| !written.contains(*n)) {
        bail!("The backup is missing {missing}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bakend_store::backup_manifest::{FORMAT, FORMAT_VERSION};
    use serde_json::json;

    const SHA: &str = "00000000000000000000000000000000000000000000000000000000000000ff";

    #[test]
    fn member_names_stay_inside() {
        assert_eq!(
            member_name(Path::new("./storage/files/a")).as_deref(),
            Some("storage/files/a")
        );
        assert_eq!(
            member_name(Path::new("bakend.db")).as_deref(),
            Some("bakend.db")
        );
        for bad in ["../x", "/etc/passwd", "storage/../../x", ".", ""] {
            assert_eq!(member_name(Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn manifest_sizes_add_up_and_bad_ones_are_refused() {
        let m = json!({"format": FORMAT, "formatVersion": FORMAT_VERSION,
            "database": {"path": "bakend.db", "size": 10, "sha256": SHA},
            "storage": [{"path": "storage/files/a", "size": 5, "sha256": SHA}]});
        let parsed = Manifest::parse(m.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.total, 15);
        assert_eq!(parsed.db_name, "bakend.db");

        let mut twice = m.clone();
        twice["storage"] = json!([{"path": "storage/a", "size": 1, "sha256": SHA},
                                  {"path": "storage/a", "size": 1, "sha256": SHA}]);
        let mut overflow = m.clone();
        overflow["storage"][0]["size"] = json!(u64::MAX);
        let mut escape = m.clone();
        escape["storage"][0]["path"] = json!("storage/../../etc/x");
        let mut no_sha = m.clone();
        no_sha["database"]["sha256"] = json!("x");
        for (bad, why) in [
            (twice, "twice"),
            (overflow, "impossible total"),
            (escape, "bad storage path"),
            (no_sha, "SHA-256"),
        ] {
            let e = Manifest::parse(bad.to_string().as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn free_space_of_an_existing_folder_is_known_and_a_petabyte_is_too_much() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        ensure_free_space(dir.path(), 1).unwrap();
        let e = ensure_free_space(dir.path(), 1 << 50)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("Not enough free space to restore"), "{e}");
        assert!(e.contains("1.0 PiB"), "{e}");
    }
}
