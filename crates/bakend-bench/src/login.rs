//! `rest-login`: N clients sign the same account in back-to-back for D seconds. Each login
//! verifies an argon2id hash, so this measures the password work the server can do.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::RunArgs;
use crate::http::{KeepAlive, RequestTemplate, Target};
use crate::rest_create::client;
use crate::stats::Report;

const SCENARIO: &str = "rest-login";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub run: RunArgs,
    /// Account to register (if new) and sign in with.
    #[arg(long, default_value = "bench-login@bench.test")]
    pub email: String,
}

pub async fn run(args: &Args) -> Result<()> {
    let run = &args.run;
    let target = Target::resolve(&run.url).await?;
    let body = Bytes::from(
        serde_json::json!({"email": args.email, "password": "bench-password-1"}).to_string(),
    );
    let template = |path: &str| -> Result<RequestTemplate> {
        Ok(RequestTemplate {
            method: Method::POST,
            uri: target.path_uri(path)?,
            host: target.host.clone(),
            json_body: Some(body.clone()),
            authorization: None,
        })
    };
    let mut setup = KeepAlive::new(target.addr);
    setup.connect().await.context("connecting to the server")?;
    let (status, text) = setup.fetch(&template("/api/auth/register")?).await?;
    if status != StatusCode::CREATED && status != StatusCode::CONFLICT {
        bail!(
            "registering {} returned {status}: {}",
            args.email,
            String::from_utf8_lossy(&text)
        );
    }
    let login = template("/api/auth/login")?;
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
        tasks.spawn(client(conn, login.clone(), StatusCode::OK, warmup_end, end));
    }
    let mut recorders = Vec::new();
    let mut reconnects = 0;
    while let Some(joined) = tasks.join_next().await {
        let (rec, rc) = joined.context("a client task panicked")?;
        recorders.push(rec);
        reconnects += rc;
    }
    let report = Report::merge(SCENARIO, measured, warmup, recorders, reconnects);
    if run.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    Ok(())
}
