//! The admin dashboard's files, embedded in the binary (docs/dashboard.md). They are written by
//! hand — ES modules and one stylesheet in `crates/bakend-server/dashboard/`, no build step — and
//! listed once in [`ASSETS`], so `cargo build` alone yields a binary that serves them.
//!
//! Each file is prepared once, on the first dashboard request: an ETag from its content and,
//! where it is smaller, a gzip copy. Serving is then a table lookup and a clone of `Bytes`.

use std::sync::OnceLock;

use bytes::Bytes;

/// One embedded file: its path below `/_/`, its `Content-Type` and its bytes.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! assets {
    ($($path:literal => $ctype:expr),* $(,)?) => {
        &[$(Asset {
            path: $path,
            content_type: $ctype,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboard/", $path)),
        }),*]
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file of the dashboard. A test checks this against the folder and against the imports
/// the files make, so a file cannot be added without being served, nor imported without
/// existing.
pub const ASSETS: &[Asset] = assets![
    "index.html" => HTML,
    "app.css" => CSS,
    "favicon.svg" => SVG,
    "js/main.js" => JS,
    "js/api.js" => JS,
    "js/live.js" => JS,
    "js/dom.js" => JS,
    "js/signin.js" => JS,
    "js/overview.js" => JS,
    "js/collections.js" => JS,
    "js/schema.js" => JS,
    "js/records.js" => JS,
    "js/users.js" => JS,
    "js/storage.js" => JS,
    "js/functions.js" => JS,
    "js/jobs.js" => JS,
    "js/logs.js" => JS,
    "js/inspector.js" => JS,
];

/// The page every dashboard route loads; client-side routing takes it from there.
pub const INDEX: &str = "index.html";

/// An asset ready to serve.
pub struct Prepared {
    pub asset: &'static Asset,
    pub body: Bytes,
    /// The gzip-encoded body, when that is smaller.
    pub gzip: Option<Bytes>,
    /// A strong validator for the identity body (`"<hash>"`); the gzip body's is `"<hash>-gz"`.
    pub etag: String,
    pub etag_gzip: String,
}

static PREPARED: OnceLock<Vec<Prepared>> = OnceLock::new();

/// The prepared assets; the first call compresses them on a blocking thread (a few
/// milliseconds of CPU that have no business on the async threads).
pub async fn prepared() -> &'static [Prepared] {
    if let Some(p) = PREPARED.get() {
        return p;
    }
    let _ = tokio::task::spawn_blocking(|| PREPARED.get_or_init(prepare_all).len()).await;
    PREPARED.get_or_init(prepare_all)
}

/// The asset at `path` (below `/_/`, without a leading slash).
pub fn find<'a>(all: &'a [Prepared], path: &str) -> Option<&'a Prepared> {
    all.iter().find(|p| p.asset.path == path)
}

fn prepare_all() -> Vec<Prepared> {
    ASSETS.iter().map(prepare).collect()
}

fn prepare(asset: &'static Asset) -> Prepared {
    let hash = format!("{:016x}", fnv1a(asset.body));
    let gzip = gzip(asset.body).filter(|z| z.len() < asset.body.len());
    Prepared {
        asset,
        body: Bytes::from_static(asset.body),
        gzip: gzip.map(Bytes::from),
        etag: format!("\"{hash}\""),
        etag_gzip: format!("\"{hash}-gz\""),
    }
}

fn gzip(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).ok()?;
    enc.finish().ok()
}

/// FNV-1a, 64 bits: enough to tell versions of a file apart (an ETag, not a checksum anyone
/// relies on for integrity).
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn folder() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard")
    }

    fn files_below(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            if e.file_type().unwrap().is_dir() {
                files_below(&e.path(), &format!("{name}/"), out);
            } else {
                out.insert(name);
            }
        }
    }

    #[test]
    fn the_table_lists_exactly_the_files_in_the_folder() {
        let mut on_disk = BTreeSet::new();
        files_below(&folder(), "", &mut on_disk);
        let listed: BTreeSet<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        assert_eq!(listed, on_disk);
    }

    /// `"./x.js"` / `"/_/x"` references in the files: every one names an asset.
    #[test]
    fn every_reference_names_an_asset() {
        let names: BTreeSet<&str> = ASSETS.iter().map(|a| a.path).collect();
        let mut checked = 0;
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).unwrap();
            let dir = a.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            for quoted in text.split('"').skip(1).step_by(2) {
                let target = if let Some(rel) = quoted.strip_prefix("./") {
                    if dir.is_empty() {
                        rel.to_string()
                    } else {
                        format!("{dir}/{rel}")
                    }
                } else if let Some(abs) = quoted.strip_prefix("/_/") {
                    abs.to_string()
                } else {
                    continue;
                };
                if target.is_empty() || !target.contains('.') {
                    continue; // a client-side route, not a file
                }
                assert!(
                    names.contains(target.as_str()),
                    "{} refers to {quoted}, which is not an asset",
                    a.path
                );
                checked += 1;
            }
        }
        assert!(checked > 10, "only {checked} references found");
    }

    #[test]
    fn the_first_load_stays_small() {
        // Everything the first page load fetches is at most every asset; keep it under the
        // budget in docs/dashboard.md.
        let all = prepare_all();
        let gz: usize = all
            .iter()
            .map(|p| p.gzip.as_ref().map_or(p.body.len(), Bytes::len))
            .sum();
        assert!(gz < 150 * 1024, "gzipped total is {gz} bytes");
    }

    #[test]
    fn etags_follow_the_content() {
        let all = prepare_all();
        let tags: BTreeSet<&str> = all.iter().map(|p| p.etag.as_str()).collect();
        assert_eq!(tags.len(), all.len());
        assert!(find(&all, INDEX).is_some());
        assert!(find(&all, "nope.js").is_none());
    }
}
