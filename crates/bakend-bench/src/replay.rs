//! `replay`: how fast a resuming client is sent what it missed. One client notes its position,
//! goes away while `--events` records are written, then subscribes with `since`; the figure is
//! events replayed per second from that subscribe to the `resumed` frame.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::SinkExt;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::RealtimeArgs;
use crate::http::{KeepAlive, RequestTemplate, Target};
use crate::ws::{Action, Endpoint, channel_request, is_event, next_data};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub rt: RealtimeArgs,
    /// Collection to write to (it must exist and be publicly readable).
    #[arg(long, default_value = "bench")]
    pub collection: String,
    /// Events written while the client is away.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 32)]
    pub writers: u64,
}

fn parse(frame: &Bytes) -> Result<Value> {
    serde_json::from_slice(frame).context("a frame that is not JSON")
}

pub async fn run(args: &Args) -> Result<()> {
    let target = Target::resolve(&args.rt.url).await?;
    let endpoint = Endpoint::new(&target, 0, 256 * 1024);
    let channel = format!("{}.*", args.collection);
    let template = RequestTemplate {
        method: Method::POST,
        uri: target.path_uri(&format!("/api/{}", args.collection))?,
        host: target.host.clone(),
        json_body: Some(Bytes::from_static(br#"{"title":"hello","n":1}"#)),
        authorization: None,
    };

    // Where the client leaves off.
    let (mut ws, hello) = endpoint.connect_with_hello(0, None).await?;
    let epoch = parse(&hello)?["epoch"]
        .as_str()
        .map(str::to_string)
        .context("the server has no event journal (realtime.journal is off)")?;
    channel_request(&mut ws, Action::Subscribe, &channel).await?;
    let mut conn = KeepAlive::new(target.addr);
    conn.connect().await?;
    let (status, _) = conn.send(&template).await?;
    if status != StatusCode::CREATED {
        bail!("creating a record answered {status}");
    }
    let since = loop {
        let f = next_data(&mut ws).await?;
        if is_event(&f) {
            break parse(&f)?["event"]["seq"]
                .as_u64()
                .context("event without seq")?;
        }
    };
    drop(ws);

    // What it misses.
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let per = args.events.div_ceil(args.writers.max(1));
    let mut remaining = args.events;
    for _ in 0..args.writers.max(1) {
        let n = per.min(remaining);
        remaining -= n;
        let (template, addr) = (template.clone(), target.addr);
        tasks.spawn(async move {
            let mut c = KeepAlive::new(addr);
            c.connect().await?;
            for _ in 0..n {
                let (status, _) = c.send(&template).await?;
                if status != StatusCode::CREATED {
                    bail!("creating a record answered {status}");
                }
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let write_secs = started.elapsed().as_secs_f64();

    // The resume.
    let mut ws = endpoint.connect(1, None).await?;
    let msg =
        json!({"action": "subscribe", "channel": channel, "since": {"epoch": epoch, "seq": since}});
    let t0 = Instant::now();
    ws.send(Message::text(msg.to_string())).await?;
    let mut replayed = 0u64;
    let resumed = loop {
        let f = next_data(&mut ws).await?;
        if is_event(&f) {
            replayed += 1;
        } else if memchr::memmem::find(&f, br#""type":"resumed""#).is_some() {
            break parse(&f)?;
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    println!("scenario     replay");
    println!(
        "written      {} events in {write_secs:.2} s while the client was away",
        args.events
    );
    println!(
        "resumed      recovered {} (lastSeq {})",
        resumed["recovered"], resumed["lastSeq"]
    );
    println!(
        "replayed     {replayed} events in {:.3} s: {:.0} events/s to one client",
        secs,
        replayed as f64 / secs.max(1e-9)
    );
    if replayed != args.events {
        bail!("expected {} replayed events, got {replayed}", args.events);
    }
    Ok(())
}
