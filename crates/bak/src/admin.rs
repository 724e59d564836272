//! `bak admin create EMAIL`: make an admin without the `BAKEND_ADMIN_EMAIL` trick. Safe while
//! the server runs (SQLite WAL; the server picks the change up within seconds).

use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use bakend_auth::{AdminOutcome, AuthService};
use bakend_core::config::Config;
use bakend_events::LocalBus;
use bakend_store::Database;

use crate::cli::Cli;

pub fn create(cli: &Cli, email: &str, password_stdin: bool) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref(), &|k| std::env::var(k).ok())?;
    let db = Arc::new(Database::open(&config.database, LocalBus::new())?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("Cannot start the async runtime")?;
    // The secret only signs tokens, which this command does not issue.
    let auth = AuthService::new(db.clone(), "unused", &config.auth)?;
    let password = |prompt_needed: bool| -> anyhow::Result<String> {
        if password_stdin {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            return Ok(line.trim_end_matches(['\r', '\n']).to_string());
        }
        if !prompt_needed {
            return Ok(String::new());
        }
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Repeat password: ")?;
        if first != again {
            return Err(anyhow!("Passwords do not match"));
        }
        Ok(first)
    };
    let result = runtime.block_on(async {
        match auth.ensure_admin(email, None).await {
            Err(bakend_auth::AuthError::BadRequest(m)) if m.contains("password is required") => {
                let pw = password(true)?;
                Ok(auth.ensure_admin(email, Some(&pw)).await?)
            }
            other => Ok::<_, anyhow::Error>(other?),
        }
    });
    db.close();
    match result? {
        AdminOutcome::Created(id) => println!("Created admin {email} ({id})"),
        AdminOutcome::Promoted(id) => println!("Promoted {email} ({id}) to admin"),
        AdminOutcome::AlreadyAdmin(id) => println!("{email} ({id}) is already an admin"),
    }
    Ok(())
}
