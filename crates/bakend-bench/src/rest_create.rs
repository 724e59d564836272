//! `rest-create`: the write path under load. Every request inserts a record, so this measures
//! request parsing, validation, the SQLite write (including group commit) and event
//! publication together, the path most likely to saturate first.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::RunArgs;
use crate::http::{KeepAlive, RequestTemplate, Target, connect_all};
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
    check_collection_name(collection)?;
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

/// Refuses a `--collection` that would not stay one path segment.
pub(crate) fn check_collection_name(collection: &str) -> Result<()> {
    if collection.is_empty()
        || !collection
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bail!("--collection {collection:?} must be letters, digits, '_' or '-'");
    }
    Ok(())
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
    let conns = connect_all(target.addr, run.clients, "connection").await?;
    let window = Window::starting_now(run);
    let report = measure(scenario, conns, Arc::from([template]), ok_status, window).await?;
    print_report(&report, run.json);
    Ok(())
}

pub(crate) fn print_report(report: &Report, json: bool) {
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
}

/// The warm-up and measured window of a closed-loop run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub warmup: Duration,
    pub measured: Duration,
    /// Responses completing before this instant are discarded.
    pub warmup_end: Instant,
    /// Requests still in flight at this instant are abandoned.
    pub end: Instant,
}

impl Window {
    /// The window of `run`, starting now; take it after connecting, so connection setup is
    /// not measured even with no warm-up.
    pub fn starting_now(run: &RunArgs) -> Window {
        let warmup = Duration::from_secs(run.warmup);
        let measured = Duration::from_secs(run.duration);
        let warmup_end = Instant::now() + warmup;
        Window {
            warmup,
            measured,
            warmup_end,
            end: warmup_end + measured,
        }
    }
}

/// Runs one client per connection, each sending requests back-to-back until `window` ends,
/// and merges what they saw. The clients go through `templates` in order, wrapping around,
/// client `i` starting at `i × len / clients` so they spread over the list rather than all
/// asking for the same thing at once.
pub(crate) async fn measure(
    scenario: &'static str,
    conns: Vec<KeepAlive>,
    templates: Arc<[RequestTemplate]>,
    ok_status: StatusCode,
    window: Window,
) -> Result<Report> {
    if templates.is_empty() {
        bail!("no request to send");
    }
    let clients = conns.len();
    let mut tasks = JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let first = i * templates.len() / clients.max(1);
        tasks.spawn(client(conn, templates.clone(), first, ok_status, window));
    }
    let mut recorders = Vec::with_capacity(clients);
    let mut reconnects = 0;
    while let Some(joined) = tasks.join_next().await {
        let (rec, rc) = joined.context("a client task panicked")?;
        recorders.push(rec);
        reconnects += rc;
    }
    Ok(Report::merge(
        scenario,
        window.measured,
        window.warmup,
        recorders,
        reconnects,
    ))
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
        get_ok(&mut conn, target, path, hint, CHECK_TIMEOUT).await?;
    }
    Ok(())
}

/// GETs `path` and returns the body of a 200; any other outcome is an error naming the URL,
/// `hint` (what to check) and the start of the server's answer.
pub(crate) async fn get_ok(
    conn: &mut KeepAlive,
    target: &Target,
    path: &str,
    hint: &str,
    timeout: Duration,
) -> Result<Bytes> {
    let url = format!("{}{path}", target.origin);
    let template = RequestTemplate {
        method: Method::GET,
        uri: target.path_uri(path)?,
        host: target.host.clone(),
        json_body: None,
        authorization: None,
    };
    let (status, body) = tokio::time::timeout(timeout, conn.fetch(&template))
        .await
        .with_context(|| format!("GET {url}: no response within {timeout:?}"))?
        .with_context(|| format!("GET {url} failed ({hint})"))?;
    if status != StatusCode::OK {
        let snippet = crate::ws::snippet(&body);
        bail!("GET {url} returned {status}, expected 200 ({hint}): {snippet}");
    }
    Ok(body)
}

/// One virtual client: sends requests back-to-back on its own connection until `end`.
/// A request counts if it completes inside [warmup_end, end]; one still in flight at `end` is
/// abandoned, which keeps the run strictly bounded even if the server stops answering.
async fn client(
    mut conn: KeepAlive,
    templates: Arc<[RequestTemplate]>,
    first: usize,
    ok_status: StatusCode,
    window: Window,
) -> (Recorder, u64) {
    let Window {
        warmup_end, end, ..
    } = window;
    let mut rec = Recorder::new(ok_status.as_u16());
    let deadline = tokio::time::sleep_until(end);
    tokio::pin!(deadline);
    for template in templates.iter().cycle().skip(first) {
        let sent = Instant::now();
        tokio::select! {
            biased;
            _ = &mut deadline => break,
            result = conn.send(template) => {
                let done = Instant::now();
                if done > end {
                    break;
                }
                let measuring = done >= warmup_end;
                match result {
                    Ok((status, len)) => {
                        if measuring {
                            rec.response(status.as_u16(), done - sent);
                            rec.body_bytes(len);
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
