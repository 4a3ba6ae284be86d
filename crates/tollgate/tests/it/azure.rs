//! An Azure OpenAI provider: deployment URLs, `api-version`, the `api-key` header.

use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_provider_serves_chat_through_deployment_paths() {
    // The sim requires the key; on Azure deployment paths it accepts it only in `api-key`, and
    // it requires `api-version`, so a 200 proves the Azure wire was used.
    let env = TestEnv::with(Opts {
        provider_auth: true,
        extra_providers: "  az:\n    kind: azure\n    base_url: {sim_root}\n    api_version: 2024-10-21\n    api_key: ${SIM_API_KEY}\n".into(),
        extra_models: "  az-mini: {deployments: [{provider: az, model: gpt-4o-mini}]}\n  az-embed: {deployments: [{provider: az, model: text-embedding-3-small}]}\n".into(),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let before = env.sim.stats();

    let r = env
        .chat(
            &key,
            json!({"model": "az-mini", "messages": [{"role": "user", "content": "hello azure"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-provider"), "az");
    assert_eq!(header(&r, "x-tollgate-served-model"), "gpt-4o-mini");
    let id = header(&r, "x-tollgate-request-id").to_string();
    let v: Value = r.json().await.unwrap();
    // The deployment name (from the URL path) is the model the sim answers as.
    assert_eq!(v["model"], "gpt-4o-mini");
    let (input, output) = (
        v["usage"]["prompt_tokens"].as_u64().unwrap(),
        v["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    let row = env.row(&id).await;
    assert_eq!(row["provider"], "az");
    assert_eq!(row["deployment"], "az/gpt-4o-mini");
    assert_eq!(row["requested_model"], "az-mini");
    assert_eq!(row["input_tokens"], input);
    assert_eq!(row["output_tokens"], output);
    assert_eq!(
        nanos(row["effective_cost"].as_str().unwrap()),
        gpt4o_mini_cost(input, 0, output)
    );

    // Streaming, with usage.
    let r = env
        .chat(
            &key,
            json!({"model": "az-mini", "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "hello azure"}]}),
        )
        .await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    let events = read_stream(r).await;
    assert!(events.last().unwrap().is_done());
    assert_eq!(streamed_text(&events).split_whitespace().count(), 16);
    let row = env.row(&id).await;
    assert_eq!(row["usage_source"], "provider");
    assert_eq!(row["output_tokens"], 16);

    // Embeddings through the deployment path.
    let r = env
        .http
        .post(env.url("/v1/embeddings"))
        .bearer_auth(&key)
        .json(&json!({"model": "az-embed", "input": "vector please"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "text-embedding-3-small");

    let after = env.sim.stats();
    assert_eq!(after.chat_completions - before.chat_completions, 2);
    assert_eq!(after.embeddings - before.embeddings, 1);
    assert_eq!(
        after.client_errors, before.client_errors,
        "no auth/validation failures"
    );
}
