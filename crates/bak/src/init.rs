//! `bak init [name]`: a new project folder with a config, an example-free layout and a README.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

pub fn run(name: Option<&str>) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("Cannot read the current directory")?;
    let dir: PathBuf = match name {
        Some(n) => cwd.join(n),
        None => cwd.clone(),
    };
    if dir.exists() {
        let occupied = std::fs::read_dir(&dir)
            .with_context(|| format!("Cannot read {}", dir.display()))?
            .filter_map(Result::ok)
            .any(|e| e.file_name() != ".git");
        if occupied {
            bail!("Directory is not empty: {}", dir.display());
        }
    }
    for sub in ["collections", "functions", "jobs"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("Cannot create {}", dir.join(sub).display()))?;
    }
    let project = match name {
        Some(n) => Path::new(n)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| n.to_string()),
        None => cwd
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bakend-app".into()),
    };
    let secret = bakend_core::ids::random_secret();
    let config = serde_json::json!({
        "port": 8080,
        "database": "./bakend.db",
        "storage": "./storage",
        "logLevel": "INFO",
        "auth": {
            "jwtSecret": secret,
            "accessTokenTtl": "15m",
            "refreshTokenTtl": "7d"
        }
    });
    let config_text = serde_json::to_string_pretty(&config)? + "\n";
    write(&dir.join("bakend.json"), &config_text)?;
    write(
        &dir.join(".gitignore"),
        "bakend.db\nbakend.db-wal\nbakend.db-shm\nbakend.db.lock\nbakend-backup-*.tar.gz\nstorage/\n.bakend-cache/\n.DS_Store\n",
    )?;
    write(
        &dir.join("README.md"),
        &format!(
            "# {project}\n\nA [Bakend](https://bakend.dev) project.\n\n```sh\nbak start\n```\n\nThen open http://localhost:8080/_/ and define collections in `collections/*.json`.\n"
        ),
    )?;
    println!("Created Bakend project at {}", dir.display());
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("Cannot write {}", path.display()))
}
