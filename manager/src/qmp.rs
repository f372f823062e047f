//! A minimal QMP client (QEMU Machine Protocol over the VM's Unix socket): greeting,
//! `qmp_capabilities`, then one command; asynchronous events in between are skipped.
//! Used to identify a re-adopted VM (`query-name`) and to power it down.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// QMP failures.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Socket I/O.
    #[error("QMP {path}: {source}")]
    Io {
        /// Socket.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Protocol or command error.
    #[error("QMP {path}: {why}")]
    Protocol {
        /// Socket.
        path: String,
        /// What went wrong.
        why: String,
    },
}

/// Runs `command` (with `arguments`, if any) and returns its `return` value.
pub async fn execute(
    socket: &Path,
    command: &str,
    arguments: Option<Value>,
    timeout: Duration,
) -> Result<Value, QmpError> {
    let path = socket.display().to_string();
    let fut = async {
        let io = |source| QmpError::Io {
            path: path.clone(),
            source,
        };
        let proto = |why: String| QmpError::Protocol {
            path: path.clone(),
            why,
        };
        let stream = UnixStream::connect(socket).await.map_err(io)?;
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        let greeting = lines.next_line().await.map_err(io)?.unwrap_or_default();
        let g: Value =
            serde_json::from_str(&greeting).map_err(|e| proto(format!("greeting: {e}")))?;
        if g.get("QMP").is_none() {
            return Err(proto(format!("not a QMP greeting: {greeting}")));
        }
        let mut result = Value::Null;
        for (i, cmd) in [json!({"execute": "qmp_capabilities"}), {
            let mut c = json!({"execute": command});
            if let (Some(a), Some(o)) = (arguments.clone(), c.as_object_mut()) {
                o.insert("arguments".into(), a);
            }
            c
        }]
        .into_iter()
        .enumerate()
        {
            w.write_all(format!("{cmd}\n").as_bytes())
                .await
                .map_err(io)?;
            loop {
                let line = lines
                    .next_line()
                    .await
                    .map_err(io)?
                    .ok_or_else(|| proto("connection closed".into()))?;
                let v: Value =
                    serde_json::from_str(&line).map_err(|e| proto(format!("reply: {e}")))?;
                if v.get("event").is_some() {
                    continue;
                }
                if let Some(err) = v.get("error") {
                    return Err(proto(format!("{cmd}: {err}")));
                }
                if let Some(ret) = v.get("return") {
                    if i == 1 {
                        result = ret.clone();
                    }
                    break;
                }
            }
        }
        Ok(result)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| QmpError::Protocol {
            path: path.clone(),
            why: format!("no answer within {timeout:?}"),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn talks_qmp_and_skips_events() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("qmp.sock");
        let l = UnixListener::bind(&p).unwrap();
        let srv = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .await
                .unwrap();
            let l1 = lines.next_line().await.unwrap().unwrap();
            assert!(l1.contains("qmp_capabilities"));
            w.write_all(b"{\"return\": {}}\n").await.unwrap();
            let l2 = lines.next_line().await.unwrap().unwrap();
            assert!(l2.contains("query-name"));
            w.write_all(b"{\"event\": \"RESUME\"}\n{\"return\": {\"name\": \"cocos-x\"}}\n")
                .await
                .unwrap();
        });
        let v = execute(&p, "query-name", None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(v["name"], "cocos-x");
        srv.await.unwrap();
        let e = execute(
            &d.path().join("none.sock"),
            "x",
            None,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("none.sock"));
    }
}
