//! `portok inspect NAME [-f] [--json]`: the inspector's requests in the terminal, one line
//! each (or one JSON object each), from the daemon over the control socket.

use super::*;
use serde_json::Value;
use std::time::Duration;

pub(super) fn main(name: &str, follow: bool, json: bool, secrets: bool) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let mut after = 0;
    loop {
        let req = control::Request::Requests {
            name: name.to_string(),
            after,
            secrets,
        };
        let reply = control::call(&state, &req, Duration::from_secs(10))?;
        let list = match reply.data {
            Some(Value::Array(list)) => list,
            _ => Vec::new(),
        };
        for r in &list {
            after = after.max(r["id"].as_u64().unwrap_or(0));
            if json {
                println!("{}", serde_json::to_string(r)?);
            } else {
                println!("{}", line(r));
            }
        }
        if !follow {
            if list.is_empty() && !json {
                eprintln!("portok: no requests to {name} kept yet (they are kept as they come; -f waits for them)");
            }
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `23:45:21.123  GET /path?q=1  200  1.3 ms  109 B in  175 B out  gen 1 :4012`; a gRPC
/// call shows its status and messages: `POST /echo.Echo/Find  200 NOT_FOUND 1→0 msgs ...`.
fn line(r: &Value) -> String {
    let time = r["time"].as_str().unwrap_or("");
    let mut status = r["status"].to_string();
    if let Some(call) = r["grpc"].as_object() {
        let name = call["status_name"].as_str().unwrap_or("no status");
        status = format!(
            "{status} {name} {}→{} msgs",
            call["messages_in"], call["messages_out"]
        );
    }
    format!(
        "{}  {} {}  {}  {:.1} ms  {} B in  {} B out  gen {} :{}",
        time.get(11..23).unwrap_or(time),
        r["method"].as_str().unwrap_or(""),
        r["path"].as_str().unwrap_or(""),
        status,
        r["duration_ms"].as_f64().unwrap_or(0.0),
        r["bytes_in"],
        r["bytes_out"],
        r["generation"],
        r["port"],
    )
}
