//! `rest-read`: the read path under load. Virtual clients list a collection (a given page,
//! `perPage`, `sort`, optionally `skipTotal`), follow a keyset cursor to a given depth, or get
//! records by id, back-to-back for D seconds, against a collection filled to N records first.
//! Optional paced writers create records during the run, so read figures can be given "with
//! concurrent writes". `--api pocketbase` sends PocketBase's paths and parameter names, so the
//! same tool measures both servers the same way.
//!
//! The tool only reports what the server answers: a server that ignores `skipTotal` still
//! returns totals, one without keyset pagination makes `--mode cursor` fail before measuring.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::RunArgs;
use crate::fanout::{join_all, merge_published};
use crate::http::{KeepAlive, RequestTemplate, Target, connect_all};
use crate::publish::{self, Schedule};
use crate::rest_create::{Window, check_collection_name, get_ok, measure};
use crate::stats::Report;
use crate::ws::percent_encode;

const SCENARIO: &str = "rest-read";
const WRITES: &str = "rest-read writes";

/// Bound on one setup request (count, sample page, cursor step, fill create): generous, since
/// before keyset pagination and cheap counts a list of a large collection can take a second.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Writers' responses still outstanding this long after the run are abandoned.
const WRITE_GRACE: Duration = Duration::from_secs(5);

/// Page size used to sample ids for `--mode get`.
const SAMPLE_PAGE: u32 = 100;

/// The integer field the writers and the fill set (`publish::body`'s shape).
const N_FIELD: &str = "n";

/// Seed of the sampling and fill-title generator: the same run picks the same ids.
const SEED: u64 = 0x5EED_BA4E_4D00_0015;

/// How often a long fill reports progress on stderr.
const FILL_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Which server's REST dialect to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// `GET /api/<c>?perPage=&page=&sort=&skipTotal=true&after=`, `GET /api/<c>/<id>`,
    /// creates answer 201.
    Bakend,
    /// `GET /api/collections/<c>/records?…&skipTotal=1`, `…/records/<id>`; `createdAt` and
    /// `updatedAt` in `--sort` become `created`/`updated`, no `--sort` sends `-created`
    /// (PocketBase has no newest-first default; `--sort ''` sends none); creates answer 200.
    Pocketbase,
}

/// What each measured request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The same list page over and over (`--page`, `--per-page`, `--sort`, `--skip-total`).
    List,
    /// Records by id, cycling through `--sample` ids listed first from random pages.
    Get,
    /// Keyset pagination: follow `next` from page 1 for `--cursor-depth` pages (not
    /// measured), then fetch `after=<that cursor>` over and over.
    Cursor,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Deep pages, fairly: `--mode cursor --cursor-depth 10000` measures the page reached after \
10,000 pages of `after=` cursors, fetched repeatedly with the very cursor the walk ended on; \
`--mode cursor --cursor-depth 1` is the same request one page down (page 2), and `--mode list` \
is page 1 itself. Same perPage, sort and skipTotal in all three, so only the depth differs. \
`--mode list --page 10001` measures the same depth through OFFSET.")]
pub struct Args {
    #[command(flatten)]
    pub run: RunArgs,
    /// Collection to read. With `--records` or `--writers` it needs a string field `title` and
    /// an integer (PocketBase: number) field `n`, and must allow creating without auth.
    #[arg(long, default_value = "bench")]
    pub collection: String,
    /// REST dialect of the server.
    #[arg(long, value_enum, default_value_t = Api::Bakend)]
    pub api: Api,
    /// What is measured.
    #[arg(long, value_enum, default_value_t = Mode::List)]
    pub mode: Mode,
    /// Fill the collection to at least this many records before measuring (through REST
    /// creates, `--fill-clients` at once; the fill rate is printed). Skipped when it has as
    /// many already, so one large fill serves several runs.
    #[arg(long)]
    pub records: Option<u64>,
    /// Concurrent clients for the fill.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub fill_clients: u32,
    /// `perPage` of every list request.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub per_page: u32,
    /// Page measured by `--mode list` (1 sends no `page` parameter).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub page: u64,
    /// `sort` of list requests, passed through (`title`, `-createdAt`, `-views,title`);
    /// without it the server's default order (PocketBase: `-created`); `--sort ''` sends
    /// no `sort` at all, to either server.
    #[arg(long)]
    pub sort: Option<String>,
    /// Ask the server not to count (`skipTotal=true`; PocketBase `skipTotal=1`).
    #[arg(long)]
    pub skip_total: bool,
    /// `--mode cursor`: pages walked through `next` cursors before measuring.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub cursor_depth: u64,
    /// `--mode get`: how many ids to sample.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub sample: u32,
    /// Clients creating records during warm-up and measurement, each on its own connection;
    /// reported separately. A writer waits for each answer before its next create, so use
    /// enough of them that W / R exceeds the create latency; sends that start more than 1 ms
    /// after their slot are counted as late.
    #[arg(long, default_value_t = 0)]
    pub writers: u32,
    /// Creates per second over all writers, paced (not back-to-back).
    #[arg(long, default_value_t = 100.0)]
    pub write_rate: f64,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Bakend => "bakend",
            Api::Pocketbase => "pocketbase",
        }
    }

    fn health_path(self) -> &'static str {
        match self {
            Api::Bakend => "/health",
            Api::Pocketbase => "/api/health",
        }
    }

    /// Where records of `collection` are listed and created.
    pub fn records_path(self, collection: &str) -> String {
        match self {
            Api::Bakend => format!("/api/{collection}"),
            Api::Pocketbase => format!("/api/collections/{collection}/records"),
        }
    }

    pub fn record_path(self, collection: &str, id: &str) -> String {
        format!("{}/{}", self.records_path(collection), percent_encode(id))
    }

    /// The status of a successful create.
    fn created(self) -> StatusCode {
        match self {
            Api::Bakend => StatusCode::CREATED,
            Api::Pocketbase => StatusCode::OK,
        }
    }

    /// The `sort` value to send for `--sort`, `None` for the server's default.
    pub fn sort(self, sort: Option<&str>) -> Option<String> {
        if sort == Some("") {
            return None;
        }
        match self {
            Api::Bakend => sort.map(str::to_owned),
            Api::Pocketbase => Some(sort.map_or_else(
                || "-created".to_owned(),
                |s| {
                    s.split(',')
                        .map(|key| {
                            let (sign, name) = match key.strip_prefix(['-', '+']) {
                                Some(rest) => (&key[..1], rest),
                                None => ("", key),
                            };
                            let name = match name {
                                "createdAt" => "created",
                                "updatedAt" => "updated",
                                other => other,
                            };
                            format!("{sign}{name}")
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                },
            )),
        }
    }

    pub fn list_path(self, collection: &str, q: &ListQuery<'_>) -> String {
        let mut path = self.records_path(collection);
        let _ = write!(path, "?perPage={}", q.per_page);
        if q.page > 1 {
            let _ = write!(path, "&page={}", q.page);
        }
        if let Some(sort) = self.sort(q.sort) {
            path.push_str("&sort=");
            path.push_str(&percent_encode(&sort));
        }
        if q.skip_total {
            path.push_str(match self {
                Api::Bakend => "&skipTotal=true",
                Api::Pocketbase => "&skipTotal=1",
            });
        }
        if let Some(after) = q.after {
            path.push_str("&after=");
            path.push_str(&percent_encode(after));
        }
        path
    }
}

/// The parameters of one list request.
#[derive(Clone, Copy, Debug)]
pub struct ListQuery<'a> {
    pub per_page: u32,
    /// 1 is sent as no `page` at all.
    pub page: u64,
    pub sort: Option<&'a str>,
    pub skip_total: bool,
    pub after: Option<&'a str>,
}

/// Parses a list response: a JSON object with an `items` array.
pub fn parse_list(body: &[u8]) -> Result<Value> {
    let v: Value = serde_json::from_slice(body).context("the list response is not JSON")?;
    if !v.get("items").is_some_and(Value::is_array) {
        bail!("the list response has no `items` array");
    }
    Ok(v)
}

/// The `id` of every item of a list response.
pub fn item_ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|it| it["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The cursor of the next page: `Some` for a string (or number) `next`, `None` at the end of
/// the list (`"next": null`), an error when the response has no `next` at all, which is how a
/// server without keyset pagination answers.
pub fn next_cursor(list: &Value) -> Result<Option<String>> {
    match list.get("next") {
        None => bail!(
            "the list response has no `next` field: the server does not support cursor \
             pagination (`after=`), so --mode cursor cannot run"
        ),
        Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => bail!("the list response's `next` is neither a string nor null: {other}"),
    }
}

/// A small, fast, seedable generator (SplitMix64): reproducible picks, no dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for sampling (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// `want` distinct page numbers in `1..=pages`, sorted; all of them when `want >= pages`.
fn pick_pages(pages: u64, want: u64, rng: &mut SplitMix64) -> Vec<u64> {
    if want >= pages {
        return (1..=pages).collect();
    }
    let mut picked = BTreeSet::new();
    while (picked.len() as u64) < want {
        picked.insert(1 + rng.below(pages));
    }
    picked.into_iter().collect()
}

/// The body of the `k`-th fill record: a title whose order is unrelated to creation order,
/// so sorting by `title` really sorts.
pub fn fill_body(k: u64) -> Bytes {
    let title = SplitMix64(k).next_u64();
    Bytes::from(format!(
        r#"{{"title":"post {title:016x}","{N_FIELD}":{k}}}"#
    ))
}

/// What the fill did.
#[derive(Debug, Clone, Copy)]
struct Fill {
    /// Records before the fill.
    before: u64,
    created: u64,
    secs: f64,
}

impl Fill {
    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.created as f64 / self.secs
        } else {
            0.0
        }
    }

    fn json(&self) -> Value {
        json!({
            "before": self.before,
            "created": self.created,
            "secs": (self.secs * 1000.0).round() / 1000.0,
            "perSec": self.rate().round(),
        })
    }
}

/// Everything one run measured.
pub struct Outcome {
    api: Api,
    mode: Mode,
    /// The measured request (for `get`, one of them, with the number of ids).
    request: String,
    /// Records in the collection when the measurement started (at least).
    records: u64,
    fill: Option<Fill>,
    /// What the first measured request answered, before the clock started.
    probe: Value,
    reads: Report,
    writes: Option<Writes>,
}

/// What the concurrent writers did.
struct Writes {
    report: Report,
    /// Creates per second asked for.
    rate: f64,
    /// Sends that started late (the writers could not keep the pace).
    late: u64,
    created: u64,
}

impl Outcome {
    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "api          {} ({:?})", self.api.name(), self.mode);
        let _ = writeln!(out, "request      GET {}", self.request);
        let _ = writeln!(out, "records      {}", self.records);
        if let Some(f) = &self.fill {
            let _ = writeln!(
                out,
                "fill         {} created in {:.1} s ({:.0}/s)",
                f.created,
                f.secs,
                f.rate()
            );
        }
        let _ = writeln!(out, "probe        {}", self.probe);
        out.push_str(&self.reads.human());
        if let Some(Writes {
            report,
            rate,
            late,
            created,
        }) = &self.writes
        {
            let _ = writeln!(
                out,
                "--- concurrent writes ({rate}/s offered over warm-up and measurement; \
                 {created} created, {late} sent late)"
            );
            out.push_str(&report.human());
        }
        out
    }

    pub fn json(&self) -> Value {
        let mut v = self.reads.json();
        if let Some(map) = v.as_object_mut() {
            map.insert("api".into(), json!(self.api.name()));
            map.insert(
                "mode".into(),
                json!(format!("{:?}", self.mode).to_lowercase()),
            );
            map.insert("request".into(), json!(self.request));
            map.insert("records".into(), json!(self.records));
            map.insert("fill".into(), self.fill.map_or(Value::Null, |f| f.json()));
            map.insert("probe".into(), self.probe.clone());
            let writes = match &self.writes {
                Some(w) => {
                    let mut wj = w.report.json();
                    if let Some(m) = wj.as_object_mut() {
                        m.insert("offeredRate".into(), json!(w.rate));
                        m.insert("late".into(), json!(w.late));
                        m.insert("created".into(), json!(w.created));
                    }
                    wj
                }
                None => Value::Null,
            };
            map.insert("writes".into(), writes);
        }
        v
    }
}

pub async fn run(args: &Args) -> Result<()> {
    let outcome = execute(args).await?;
    if args.run.json {
        println!("{}", outcome.json());
    } else {
        print!("{}", outcome.human());
    }
    Ok(())
}

pub async fn execute(args: &Args) -> Result<Outcome> {
    let run = &args.run;
    let (api, collection) = (args.api, args.collection.as_str());
    check_collection_name(collection)?;
    if args.mode != Mode::List && args.page != 1 {
        bail!("--page is for --mode list");
    }
    if args.writers > 0 && !(args.write_rate.is_finite() && args.write_rate > 0.0) {
        bail!("--write-rate must be a positive number of creates per second");
    }
    let target = Target::resolve(&run.url).await?;
    let mut setup = KeepAlive::new(target.addr);
    get_ok(
        &mut setup,
        &target,
        api.health_path(),
        "is the server running?",
        SETUP_TIMEOUT,
    )
    .await?;

    let before = count_records(&mut setup, &target, api, collection).await?;
    let fill = match args.records {
        Some(want) if want > before => Some(
            fill_to(
                &mut setup,
                &target,
                api,
                collection,
                before,
                want,
                args.fill_clients,
            )
            .await?,
        ),
        Some(want) => {
            eprintln!("fill: {collection} has {before} records (>= {want}), not filling");
            None
        }
        None => None,
    };
    let records = args.records.map_or(before, |want| want.max(before));

    let list = |page: u64, after: Option<&str>| {
        api.list_path(
            collection,
            &ListQuery {
                per_page: args.per_page,
                page,
                sort: args.sort.as_deref(),
                skip_total: args.skip_total,
                after,
            },
        )
    };
    let paths: Vec<String> = match args.mode {
        Mode::List => vec![list(args.page, None)],
        Mode::Cursor => {
            let cursor = walk_cursor(&mut setup, &target, args.cursor_depth, |after| {
                list(1, after)
            })
            .await?;
            vec![list(1, Some(&cursor))]
        }
        Mode::Get => sample_ids(&mut setup, &target, api, collection, args.sample, records)
            .await?
            .iter()
            .map(|id| api.record_path(collection, id))
            .collect(),
    };
    let first = paths.first().context("nothing to request")?;
    let probe_body = get_ok(
        &mut setup,
        &target,
        first,
        "the measured request must answer 200",
        SETUP_TIMEOUT,
    )
    .await?;
    let probe = probe(args.mode, &probe_body);
    eprintln!("probe: GET {first} -> 200, {probe}");
    let request = match args.mode {
        Mode::Get => format!("{first} (one of {} sampled ids)", paths.len()),
        Mode::List | Mode::Cursor => first.clone(),
    };
    let templates: Arc<[RequestTemplate]> = paths
        .iter()
        .map(|p| template(&target, Method::GET, p))
        .collect::<Result<Vec<_>>>()?
        .into();

    let create = template(&target, Method::POST, &api.records_path(collection))?;
    let mut writer_conns = connect_all(target.addr, args.writers, "writer").await?;
    if let Some(first_writer) = writer_conns.first_mut() {
        publish::preflight(
            first_writer,
            &create,
            N_FIELD,
            &target.origin,
            api.created(),
        )
        .await?;
    }
    let conns = connect_all(target.addr, run.clients, "connection").await?;

    let window = Window::starting_now(run);
    let clock = Instant::now();
    let schedule = Schedule {
        clock,
        rate: args.write_rate,
        first_slot: 0,
        stride: 1,
        end: window.end,
        give_up: window.end + WRITE_GRACE,
    };
    let writers = publish::spawn_all(writer_conns, &create, N_FIELD, schedule, api.created());
    let reads = measure(SCENARIO, conns, templates, StatusCode::OK, window).await?;
    let published = join_all(writers, "writer").await?;
    let writes = (args.writers > 0).then(|| {
        let (report, created, late) =
            merge_published(WRITES, window.warmup + window.measured, published);
        Writes {
            report,
            rate: args.write_rate,
            late,
            created,
        }
    });
    Ok(Outcome {
        api,
        mode: args.mode,
        request,
        records,
        fill,
        probe,
        reads,
        writes,
    })
}

fn template(target: &Target, method: Method, path: &str) -> Result<RequestTemplate> {
    Ok(RequestTemplate {
        method,
        uri: target.path_uri(path)?,
        host: target.host.clone(),
        json_body: None,
        authorization: None,
    })
}

/// What the measured request answers, summarised: for a list its item count, totals and
/// cursor, so a run shows whether the server honoured `skipTotal` or `after`.
fn probe(mode: Mode, body: &[u8]) -> Value {
    let mut v = json!({ "bytes": body.len() });
    if mode == Mode::Get {
        return v;
    }
    if let (Ok(list), Some(map)) = (parse_list(body), v.as_object_mut()) {
        map.insert("items".into(), json!(item_ids(&list).len()));
        for key in ["totalItems", "totalPages"] {
            map.insert(key.into(), list.get(key).cloned().unwrap_or(Value::Null));
        }
        let next = match list.get("next") {
            None => json!("absent"),
            Some(Value::Null) => json!("null"),
            Some(_) => json!("cursor"),
        };
        map.insert("next".into(), next);
    }
    v
}

/// Records in the collection, from an unfiltered list's `totalItems`.
async fn count_records(
    conn: &mut KeepAlive,
    target: &Target,
    api: Api,
    collection: &str,
) -> Result<u64> {
    let path = api.list_path(
        collection,
        &ListQuery {
            per_page: 1,
            page: 1,
            sort: None,
            skip_total: false,
            after: None,
        },
    );
    let hint = "does the collection exist and allow listing without auth?";
    let body = get_ok(conn, target, &path, hint, SETUP_TIMEOUT).await?;
    let list = parse_list(&body).with_context(|| format!("GET {path}"))?;
    list["totalItems"]
        .as_u64()
        .with_context(|| format!("GET {path}: no non-negative `totalItems` to count records by"))
}

/// Creates records until the collection holds `want`: one checked create first (a collection
/// without the fields fails with the server's message), then `clients` connections in parallel.
async fn fill_to(
    setup: &mut KeepAlive,
    target: &Target,
    api: Api,
    collection: &str,
    before: u64,
    want: u64,
    clients: u32,
) -> Result<Fill> {
    let create = template(target, Method::POST, &api.records_path(collection))?;
    eprintln!(
        "fill: {collection} has {before} records, creating {} more",
        want - before
    );
    let started = Instant::now();
    publish::preflight(setup, &create, N_FIELD, &target.origin, api.created()).await?;
    let next = Arc::new(AtomicU64::new(before + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let conns = connect_all(target.addr, clients, "fill connection").await?;
    let mut tasks = JoinSet::new();
    for mut conn in conns {
        let (next, stop, create) = (next.clone(), stop.clone(), create.clone());
        let url = format!("{}{}", target.origin, create.uri.path());
        let ok = api.created();
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= want {
                    break;
                }
                let mut req = create.clone();
                req.json_body = Some(fill_body(k));
                let outcome = match tokio::time::timeout(SETUP_TIMEOUT, conn.fetch(&req)).await {
                    Ok(Ok((status, _))) if status == ok => Ok(()),
                    Ok(Ok((status, body))) => {
                        let snippet = crate::ws::snippet(&body);
                        Err(anyhow!("fill: POST {url} returned {status}: {snippet}"))
                    }
                    Ok(Err(e)) => Err(e.context(format!("fill: POST {url}"))),
                    Err(_) => Err(anyhow!(
                        "fill: POST {url}: no response in {SETUP_TIMEOUT:?}"
                    )),
                };
                if outcome.is_err() {
                    stop.store(true, Ordering::Relaxed);
                    return outcome;
                }
            }
            Ok(())
        });
    }
    let progress = {
        let next = next.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FILL_PROGRESS_EVERY).await;
                let done = next.load(Ordering::Relaxed).min(want);
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "fill: {done} of {want} after {secs:.0} s ({:.0}/s)",
                    (done - before) as f64 / secs
                );
            }
        })
    };
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined.context("a fill task panicked").and_then(|r| r) {
            first_error.get_or_insert(e);
        }
    }
    progress.abort();
    if let Some(e) = first_error {
        return Err(e);
    }
    let fill = Fill {
        before,
        created: want - before,
        secs: started.elapsed().as_secs_f64(),
    };
    eprintln!(
        "fill: created {} records in {:.1} s ({:.0}/s with {clients} clients)",
        fill.created,
        fill.secs,
        fill.rate()
    );
    Ok(fill)
}

/// Ids to get: up to `sample` ids from random pages of the default order, so they spread
/// over the whole collection, shuffled.
async fn sample_ids(
    conn: &mut KeepAlive,
    target: &Target,
    api: Api,
    collection: &str,
    sample: u32,
    records: u64,
) -> Result<Vec<String>> {
    let mut rng = SplitMix64(SEED);
    let pages = records.div_ceil(u64::from(SAMPLE_PAGE)).max(1);
    let want = u64::from(sample.div_ceil(SAMPLE_PAGE));
    let mut ids = Vec::new();
    for page in pick_pages(pages, want, &mut rng) {
        let path = api.list_path(
            collection,
            &ListQuery {
                per_page: SAMPLE_PAGE,
                page,
                sort: None,
                skip_total: true,
                after: None,
            },
        );
        let body = get_ok(conn, target, &path, "listing ids to get", SETUP_TIMEOUT).await?;
        ids.extend(item_ids(
            &parse_list(&body).with_context(|| format!("GET {path}"))?,
        ));
    }
    if ids.is_empty() {
        bail!("{collection} has no records to get: fill it with --records N");
    }
    for i in (1..ids.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        ids.swap(i, j);
    }
    ids.truncate(sample as usize);
    eprintln!(
        "get: {} ids sampled from {} pages",
        ids.len(),
        pages.min(want)
    );
    Ok(ids)
}

/// Follows `next` from the first page for `depth` pages and returns the last cursor.
async fn walk_cursor(
    conn: &mut KeepAlive,
    target: &Target,
    depth: u64,
    path_after: impl Fn(Option<&str>) -> String,
) -> Result<String> {
    let started = Instant::now();
    let mut after: Option<String> = None;
    for k in 1..=depth {
        let path = path_after(after.as_deref());
        let body = get_ok(conn, target, &path, "walking the cursor", SETUP_TIMEOUT).await?;
        let list = parse_list(&body).with_context(|| format!("GET {path}"))?;
        match next_cursor(&list).with_context(|| format!("GET {path}"))? {
            Some(cursor) => after = Some(cursor),
            None => bail!(
                "the list ended at page {k}, before --cursor-depth {depth}: fill more records"
            ),
        }
    }
    eprintln!(
        "cursor: walked {depth} pages in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    after.context("--cursor-depth must be at least 1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{Mock, Owners};

    fn q() -> ListQuery<'static> {
        ListQuery {
            per_page: 20,
            page: 1,
            sort: None,
            skip_total: false,
            after: None,
        }
    }

    #[test]
    fn list_paths_per_api() {
        assert_eq!(
            Api::Bakend.list_path("posts", &q()),
            "/api/posts?perPage=20"
        );
        assert_eq!(
            Api::Pocketbase.list_path("posts", &q()),
            "/api/collections/posts/records?perPage=20&sort=-created"
        );
        let all = ListQuery {
            per_page: 100,
            page: 3,
            sort: Some("-createdAt,title"),
            skip_total: true,
            after: None,
        };
        assert_eq!(
            Api::Bakend.list_path("posts", &all),
            "/api/posts?perPage=100&page=3&sort=-createdAt%2Ctitle&skipTotal=true"
        );
        assert_eq!(
            Api::Pocketbase.list_path("posts", &all),
            "/api/collections/posts/records?perPage=100&page=3&sort=-created%2Ctitle&skipTotal=1"
        );
        assert_eq!(
            Api::Pocketbase.sort(Some("+updatedAt,-views")).as_deref(),
            Some("+updated,-views")
        );
        assert_eq!(Api::Pocketbase.sort(Some("")), None);
        assert_eq!(Api::Bakend.sort(Some("")), None);
    }

    #[test]
    fn cursor_and_ids_are_encoded() {
        let after = ListQuery {
            after: Some("eyJ0Ijo/+1=="),
            skip_total: true,
            ..q()
        };
        assert_eq!(
            Api::Bakend.list_path("posts", &after),
            "/api/posts?perPage=20&skipTotal=true&after=eyJ0Ijo%2F%2B1%3D%3D"
        );
        assert_eq!(
            Api::Bakend.record_path("posts", "rec_0193-ab"),
            "/api/posts/rec_0193-ab"
        );
        assert_eq!(
            Api::Pocketbase.record_path("posts", "a b/é"),
            "/api/collections/posts/records/a%20b%2F%C3%A9"
        );
    }

    #[test]
    fn cursor_extraction() {
        let page = |s: &str| parse_list(s.as_bytes()).unwrap();
        assert_eq!(
            next_cursor(&page(r#"{"items":[],"next":"abc"}"#)).unwrap(),
            Some("abc".to_owned())
        );
        assert_eq!(
            next_cursor(&page(r#"{"items":[],"next":42}"#)).unwrap(),
            Some("42".to_owned())
        );
        assert_eq!(
            next_cursor(&page(r#"{"items":[],"next":null}"#)).unwrap(),
            None
        );
        let err = next_cursor(&page(r#"{"items":[],"totalItems":5}"#)).unwrap_err();
        assert!(err.to_string().contains("does not support cursor"), "{err}");
        assert!(next_cursor(&page(r#"{"items":[],"next":{}}"#)).is_err());
        assert!(parse_list(b"[1]").is_err());
        assert!(parse_list(b"not json").is_err());
        let ids = item_ids(&page(r#"{"items":[{"id":"a"},{"title":"x"},{"id":"b"}]}"#));
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn sampled_pages_are_distinct_and_in_range() {
        let mut rng = SplitMix64(SEED);
        assert_eq!(pick_pages(3, 10, &mut rng), [1, 2, 3]);
        let pages = pick_pages(10_000, 10, &mut rng);
        assert_eq!(pages.len(), 10);
        assert!(pages.windows(2).all(|w| w[0] < w[1]));
        assert!(pages.iter().all(|p| (1..=10_000).contains(p)));
    }

    #[test]
    fn fill_titles_do_not_follow_creation_order() {
        let body: Value = serde_json::from_slice(&fill_body(7)).unwrap();
        assert_eq!(body["n"], 7);
        let titles: Vec<String> = (0..50)
            .map(|k| {
                let b: Value = serde_json::from_slice(&fill_body(k)).unwrap();
                b["title"].as_str().unwrap().to_owned()
            })
            .collect();
        assert!(titles.windows(2).any(|w| w[0] > w[1]));
        assert!(titles.windows(2).any(|w| w[0] < w[1]));
    }

    fn args(url: String, mode: Mode) -> Args {
        Args {
            run: RunArgs {
                url,
                clients: 4,
                duration: 1,
                warmup: 0,
                threads: 1,
                json: false,
            },
            collection: "bench".into(),
            api: Api::Bakend,
            mode,
            records: Some(50),
            fill_clients: 8,
            per_page: 20,
            page: 1,
            sort: None,
            skip_total: true,
            cursor_depth: 1,
            sample: 10,
            writers: 2,
            write_rate: 50.0,
        }
    }

    #[tokio::test]
    async fn fills_reads_and_writes_against_the_mock() {
        let mock = Mock::start_full(Owners::Filter).await;
        let o = execute(&args(mock.url(), Mode::List)).await.unwrap();
        let f = o.fill.unwrap();
        assert_eq!((f.before, f.created), (0, 50));
        assert!(o.reads.ok > 0 && o.reads.errors == 0, "{}", o.human());
        assert!(o.reads.bytes_per_response() > 0);
        let w = o.writes.as_ref().unwrap();
        assert!(
            w.report.ok > 10 && w.created == w.report.ok,
            "{}",
            o.human()
        );
        let j = o.json();
        assert_eq!(j["request"], "/api/bench?perPage=20&skipTotal=true");
        assert_eq!(j["probe"]["next"], "absent");

        // A second run finds the records there and does not fill again.
        let mut get = args(mock.url(), Mode::Get);
        get.writers = 0;
        let o = execute(&get).await.unwrap();
        assert!(o.fill.is_none() && o.writes.is_none());
        assert!(o.records >= 50 && o.reads.ok > 0, "{}", o.human());
        assert!(o.request.starts_with("/api/bench/rec_"), "{}", o.request);
    }

    #[tokio::test]
    async fn cursor_mode_fails_clearly_without_next() {
        let mock = Mock::start_full(Owners::Filter).await;
        let err = execute(&args(mock.url(), Mode::Cursor))
            .await
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("does not support cursor"),
            "{err:#}"
        );
    }
}
