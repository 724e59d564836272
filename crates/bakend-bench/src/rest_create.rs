//! `rest-create`: the write path under load. Every request inserts a record, so this measures
//! request parsing, validation, the SQLite write (including group commit) and event
//! publication together, the path most likely to saturate first.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::RunArgs;
use crate::http::{KeepAlive, RequestTemplate, Target};
use crate::stats::{Recorder, Report};

const SCENARIO: &str = "rest-create";

/// How long the pre-run checks may take; a server that cannot answer a health check in this
/// time is not worth loading.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a network error so a dead server is not hammered with connection attempts.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub run: RunArgs,
    /// Collection to create records in; it must already exist on the server.
    #[arg(long, default_value = "bench")]
    pub collection: String,
    /// JSON body sent with every request, unchanged.
    #[arg(long, default_value = r#"{"title":"hello","n":1}"#)]
    pub body: String,
}

pub async fn run(args: &Args) -> Result<()> {
    let run = &args.run;
    let collection = &args.collection;
    if collection.is_empty()
        || !collection
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bail!("--collection {collection:?} must be letters, digits, '_' or '-'");
    }
    let target = Target::resolve(&run.url).await?;
    check_server(&target, collection).await?;

    let template = RequestTemplate {
        method: Method::POST,
        uri: target.path_uri(&format!("/api/{collection}"))?,
        host: target.host.clone(),
        json_body: Some(Bytes::from(args.body.clone())),
        authorization: None,
    };

    closed_loop(SCENARIO, run, &target, template, StatusCode::CREATED).await
}

/// Runs `run.clients` keep-alive clients sending `template` back-to-back through warm-up and
/// the measured window, then prints the report. Shared by the closed-loop HTTP scenarios.
pub(crate) async fn closed_loop(
    scenario: &'static str,
    run: &RunArgs,
    target: &Target,
    template: RequestTemplate,
    ok_status: StatusCode,
) -> Result<()> {
    // Connect everyone before starting the clock, so connection setup is not measured even
    // with no warm-up, and so a server that refuses connections fails the run up front.
    let mut conns = Vec::with_capacity(run.clients as usize);
    for i in 0..run.clients {
        let mut c = KeepAlive::new(target.addr);
        c.connect()
            .await
            .with_context(|| format!("opening connection {} of {}", i + 1, run.clients))?;
        conns.push(c);
    }

    let warmup = Duration::from_secs(run.warmup);
    let measured = Duration::from_secs(run.duration);
    let warmup_end = Instant::now() + warmup;
    let end = warmup_end + measured;

    let mut tasks = JoinSet::new();
    for conn in conns {
        tasks.spawn(client(conn, template.clone(), ok_status, warmup_end, end));
    }
    let mut recorders = Vec::with_capacity(run.clients as usize);
    let mut reconnects = 0;
    while let Some(joined) = tasks.join_next().await {
        let (rec, rc) = joined.context("a client task panicked")?;
        recorders.push(rec);
        reconnects += rc;
    }

    let report = Report::merge(scenario, measured, warmup, recorders, reconnects);
    if run.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

/// Fails early with a message that says what to fix, rather than reporting a run made of
/// nothing but 404s.
pub(crate) async fn check_server(target: &Target, collection: &str) -> Result<()> {
    check_gets(
        target,
        &[
            ("/health".to_owned(), "is the server running?"),
            (
                format!("/api/{collection}?perPage=1"),
                "does the collection exist and allow listing without auth?",
            ),
        ],
    )
    .await
}

/// GETs each path in turn and fails with the path's hint unless it answers 200.
pub(crate) async fn check_gets(target: &Target, checks: &[(String, &str)]) -> Result<()> {
    let mut conn = KeepAlive::new(target.addr);
    for (path, hint) in checks {
        let url = format!("{}{path}", target.origin);
        let template = RequestTemplate {
            method: Method::GET,
            uri: target.path_uri(path)?,
            host: target.host.clone(),
            json_body: None,
            authorization: None,
        };
        let (status, body) = tokio::time::timeout(CHECK_TIMEOUT, conn.fetch(&template))
            .await
            .with_context(|| format!("GET {url}: no response within {CHECK_TIMEOUT:?}"))?
            .with_context(|| format!("GET {url} failed ({hint})"))?;
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body);
            let snippet: String = text.chars().take(300).collect();
            bail!("GET {url} returned {status}, expected 200 ({hint}): {snippet}");
        }
    }
    Ok(())
}

/// One virtual client: sends requests back-to-back on its own connection until `end`.
/// A request counts if it completes inside [warmup_end, end]; one still in flight at `end` is
/// abandoned, which keeps the run strictly bounded even if the server stops answering.
async fn client(
    mut conn: KeepAlive,
    template: RequestTemplate,
    ok_status: StatusCode,
    warmup_end: Instant,
    end: Instant,
) -> (Recorder, u64) {
    let mut rec = Recorder::new(ok_status.as_u16());
    let deadline = tokio::time::sleep_until(end);
    tokio::pin!(deadline);
    loop {
        let sent = Instant::now();
        tokio::select! {
            biased;
            _ = &mut deadline => break,
            result = conn.send(&template) => {
                let done = Instant::now();
                if done > end {
                    break;
                }
                let measuring = done >= warmup_end;
                match result {
                    Ok((status, _len)) => {
                        if measuring {
                            rec.response(status.as_u16(), done - sent);
                        }
                    }
                    Err(e) => {
                        if measuring {
                            rec.network_error(&e);
                        }
                        tokio::select! {
                            biased;
                            _ = &mut deadline => break,
                            _ = tokio::time::sleep(ERROR_BACKOFF) => {}
                        }
                    }
                }
            }
        }
    }
    (rec, conn.reconnects)
}
