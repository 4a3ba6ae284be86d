//! Hardening: what the gateway does when its own code fails, and when clients or the network
//! misbehave (slow, idle, too many) — over real sockets.

use serde_json::json;

use crate::harness::*;

/// A panic in the request path is answered `500 internal_error` in the OpenAI shape and
/// recorded as a failure of the gateway, never as a client that went away; the gateway keeps
/// serving. (The probe model exists in debug builds only.)
#[tokio::test]
async fn a_panic_is_a_500_and_a_failed_row_not_a_cancellation() {
    let env = TestEnv::start().await;
    let key = env.key().await;
    for stream in [false, true] {
        let r = env
            .chat(
                &key,
                json!({"model": "__tollgate_panic_probe__", "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        let e = expect_error(r, 500, "internal_error").await;
        assert_eq!(e["type"], "server_error", "{e}");
    }
    let rows = env
        .wait_rows("model=__tollgate_panic_probe__", |r| r.len() >= 2)
        .await;
    for row in &rows {
        assert_eq!(row["outcome"], "failed", "{row}");
        assert_eq!(row["error_code"], "internal_error", "{row}");
        assert_eq!(row["status"], 500, "{row}");
    }
    let r = env
        .chat(&key, json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "still there?"}]}))
        .await;
    assert_eq!(r.status(), 200);
}
