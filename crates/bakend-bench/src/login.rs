//! `rest-login`: N clients sign the same account in back-to-back for D seconds. Each login
//! verifies an argon2id hash, so this measures the password work the server can do. With
//! `--wrong-password` every attempt fails (401), as in a password-guessing flood; the server's
//! per-address limit then needs `auth.rateLimit.attempts: 0`, since all clients share one
//! address.

use crate::RunArgs;
use crate::http::{KeepAlive, RequestTemplate, Target};
use crate::rest_create::closed_loop;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Method, StatusCode};

const SCENARIO: &str = "rest-login";
const PASSWORD: &str = "bench-password-1";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub run: RunArgs,
    /// Account to register (if new) and sign in with.
    #[arg(long, default_value = "bench-login@bench.test")]
    pub email: String,
    /// Sign in with a wrong password: every attempt costs a full verification and answers 401.
    #[arg(long)]
    pub wrong_password: bool,
}

pub async fn run(args: &Args) -> Result<()> {
    let run = &args.run;
    let target = Target::resolve(&run.url).await?;
    let body = |password: &str| {
        Bytes::from(serde_json::json!({"email": args.email, "password": password}).to_string())
    };
    let template = |path: &str, password: &str| -> Result<RequestTemplate> {
        Ok(RequestTemplate {
            method: Method::POST,
            uri: target.path_uri(path)?,
            host: target.host.clone(),
            json_body: Some(body(password)),
            authorization: None,
        })
    };
    let mut setup = KeepAlive::new(target.addr);
    setup.connect().await.context("connecting to the server")?;
    let (status, text) = setup
        .fetch(&template("/api/auth/register", PASSWORD)?)
        .await?;
    if status != StatusCode::CREATED && status != StatusCode::CONFLICT {
        bail!(
            "registering {} returned {status}: {}",
            args.email,
            String::from_utf8_lossy(&text)
        );
    }
    if args.wrong_password {
        let login = template("/api/auth/login", "not-the-bench-password")?;
        closed_loop(SCENARIO, run, &target, login, StatusCode::UNAUTHORIZED).await
    } else {
        let login = template("/api/auth/login", PASSWORD)?;
        closed_loop(SCENARIO, run, &target, login, StatusCode::OK).await
    }
}
