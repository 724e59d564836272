//! `bak jobs list | runs NAME | run NAME` (docs/jobs.md).
//!
//! `runs` reads the history from the database (safe while the server runs: SQLite WAL), so it
//! needs no JavaScript. `run` goes through the project's running server when there is one (the
//! local access file names its port and token) and otherwise runs the job in this process.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bakend_core::config::Config;
use bakend_events::LocalBus;
use bakend_functions::{FunctionsConfig, HostServices};
use bakend_jobs::local_access::{self, LocalAccessInfo};
use bakend_jobs::{History, JobRun, JobsConfig, RunStatus};
use bakend_store::Database;

use crate::cli::Cli;

fn load_config(cli: &Cli) -> anyhow::Result<(Config, JobsConfig)> {
    let config = Config::load(cli.config.as_deref(), &|k| std::env::var(k).ok())?;
    let jobs = JobsConfig::from_config(&config.jobs)?;
    Ok((config, jobs))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("Cannot start the async runtime")
}

pub fn list(cli: &Cli) -> anyhow::Result<()> {
    let (config, jobs_config) = load_config(cli)?;
    // Loading runs the modules' top level only; no context services are needed.
    let (defs, engine) = bakend_jobs::scripts::load(
        &config.project_dir,
        HostServices::default(),
        FunctionsConfig {
            workers: 1,
            ..FunctionsConfig::default()
        },
        &jobs_config.defaults,
    )?;
    engine.shutdown();
    if defs.is_empty() {
        println!("No jobs registered.");
    }
    let now = chrono::Utc::now();
    for d in defs {
        let next = d
            .schedule
            .next_after(now)
            .map(bakend_core::time::to_iso)
            .unwrap_or_else(|| "-".into());
        println!("{}\t{}\t{}\t{next}", d.name, d.schedule.expr(), d.file);
    }
    Ok(())
}

/// One history line: `runId  status  attempt=N  startedAt  endedAt[  error]`.
fn line(r: &JobRun) -> String {
    let mut s = format!(
        "{}\t{}\tattempt={}\t{}\t{}",
        r.run_id,
        r.status.as_str(),
        r.attempt,
        r.started_at,
        r.ended_at.as_deref().unwrap_or("-")
    );
    if let Some(e) = &r.error {
        s.push('\t');
        s.push_str(&e.replace(['\n', '\r'], " "));
    }
    s
}

pub fn runs(cli: &Cli, name: &str) -> anyhow::Result<()> {
    let (config, jobs_config) = load_config(cli)?;
    let known = bakend_jobs::discovery::discover(&config.project_dir)?
        .iter()
        .any(|f| f.name == name);
    let db = Arc::new(Database::open(&config.database, LocalBus::new())?);
    let history = History::new(db.clone(), jobs_config.history_limit);
    let result = runtime()?.block_on(async {
        if !known && !history.has_runs(name).await? {
            return Ok(None);
        }
        history.list(name).await.map(Some)
    });
    db.close();
    match result? {
        None => bail!("Job \"{name}\" does not exist"),
        Some(runs) if runs.is_empty() => println!("No runs recorded for job \"{name}\"."),
        Some(runs) => {
            for r in &runs {
                println!("{}", line(r));
            }
        }
    }
    Ok(())
}

pub fn run(cli: &Cli, name: &str) -> anyhow::Result<()> {
    let (config, jobs_config) = load_config(cli)?;
    let run = match local_access::read(&config.project_dir) {
        Some(info) => match run_in_server(&info, name)? {
            Some(run) => {
                eprintln!("Ran in the running server (port {}).", info.port);
                run
            }
            None => run_here(&config, jobs_config, name)?,
        },
        None => run_here(&config, jobs_config, name)?,
    };
    println!("{}", line(&run));
    if run.status != RunStatus::Completed {
        bail!(
            "Job \"{name}\" failed after {} attempt(s): {}",
            run.attempt,
            run.error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(())
}

/// Runs the job in this process (no server is running): the server is started in-process on
/// an ephemeral port with its scheduler off, so the job gets the same context (`db`, `storage`,
/// `records`), events and history as in a real server, and no other job fires meanwhile.
fn run_here(config: &Config, _jobs_config: JobsConfig, name: &str) -> anyhow::Result<JobRun> {
    let mut config = config.clone();
    config.port = 0;
    config.watch = false;
    config.jobs.schedule = false;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("Cannot start the async runtime")?;
    runtime.block_on(async {
        let server = bakend_server::start(config).await?;
        let run = server.state().jobs.jobs.run_now(name).await;
        server.shutdown().await;
        Ok(run?)
    })
}

/// Asks the running server to run the job. `Ok(None)`: no server answers on the recorded port
/// (it stopped without removing its file), so the caller runs the job here.
fn run_in_server(info: &LocalAccessInfo, name: &str) -> anyhow::Result<Option<JobRun>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, info.port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return Ok(None);
    };
    let path = format!("/api/admin/jobs/{}/run", percent_encode(name));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{}: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        info.port,
        local_access::HEADER,
        info.token
    );
    stream
        .write_all(request.as_bytes())
        .context("Cannot send the request to the running server")?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .context("Cannot read the running server's answer")?;
    let (status, body) = parse_response(&raw)?;
    let message = || {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())
    };
    match status {
        200 => {
            let run: JobRun = serde_json::from_slice(&body)
                .context("The running server sent an unexpected answer")?;
            Ok(Some(run))
        }
        401 | 403 => Err(anyhow!(
            "The server on port {} did not accept the local access token in {} (is another server using this project?)",
            info.port,
            local_access::path(std::path::Path::new(".")).display()
        )),
        _ => Err(anyhow!("{}", message())),
    }
}

/// Keeps unreserved characters; everything else (including `/` in `reports/daily`) is
/// percent-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Status and body of an HTTP/1.1 response read to the end (`Connection: close`).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("The running server sent an incomplete answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("The running server sent an invalid status line"))?;
    let body = &raw[split + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_vec()
        },
    ))
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || body.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[(eol + 4 + size).min(body.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_for_the_path() {
        assert_eq!(percent_encode("reports/daily"), "reports%2Fdaily");
        assert_eq!(percent_encode("a-b_c.d"), "a-b_c.d");
    }

    #[test]
    fn responses_plain_and_chunked() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"{}"[..]));
        let (s, b) = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (404, &b"abcde"[..]));
    }
}
