//! Acknowledged writes survive a hard kill; SIGTERM shuts down cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{BakProcess, write_collections};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_create() {
    let dir = tempfile::tempdir().unwrap();
    write_collections(
        dir.path(),
        &[json!({"name": "posts", "fields": [
            {"name": "title", "type": "string", "required": true},
            {"name": "n", "type": "integer"}
        ]})],
    );
    let mut bak = BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let url = format!("{}/api/posts", bak.url());
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut acked: Vec<Value> = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                i += 1;
                let sent = http
                    .post(&url)
                    .json(&json!({"title": format!("w{w}-{i}"), "n": i}))
                    .send()
                    .await;
                let Ok(resp) = sent else { break };
                if resp.status() != 201 {
                    break;
                }
                match resp.json::<Value>().await {
                    Ok(v) => acked.push(v),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    bak.child.kill().unwrap(); // SIGKILL: no chance to flush anything
    let _ = bak.child.wait();
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 50,
        "only {} creates acknowledged before the kill",
        acked.len()
    );

    let mut again = BakProcess::spawn(dir.path(), &[]);
    again.wait_ready().await;
    let http = reqwest::Client::new();
    let mut stored = std::collections::HashMap::new();
    for page in 1.. {
        let r: Value = http
            .get(format!(
                "{}/api/posts?perPage=1000&page={page}",
                again.url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = r["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        for item in items {
            stored.insert(item["id"].as_str().unwrap().to_string(), item.clone());
        }
    }
    for record in &acked {
        let id = record["id"].as_str().unwrap();
        assert_eq!(
            stored.get(id),
            Some(record),
            "acknowledged record {id} lost or changed"
        );
    }

    again.signal(libc::SIGTERM);
    let status = again.wait_exit().await;
    assert!(status.success(), "graceful shutdown exit: {status:?}");
    assert!(again.stderr().contains("Shutting down"));
    assert!(again.stdout().contains("Listening on :"));
}
