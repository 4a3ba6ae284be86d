//! The simulator's knobs ([`SimConfig`]): CLI flags for `tollgate mock-provider`, the argument
//! of [`crate::spawn`], and the JSON accepted by `POST /_sim/config`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Latency, length and fault knobs. See the crate documentation for what each one does.
///
/// Deserialisation fills absent fields with their defaults; `POST /_sim/config` instead
/// overlays the posted fields on the *current* configuration ([`SimConfig::merged`]).
#[derive(Debug, Clone, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Delay before the response headers / first chunk, ms.
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,
    /// Delay between stream chunks, ms.
    #[arg(long, default_value_t = 0)]
    pub chunk_delay_ms: u64,
    /// Number of content chunks a streamed answer is split into (0 = one chunk per token).
    #[arg(long, default_value_t = 0)]
    pub chunks: u32,
    /// Completion length in tokens when the request sets no max_tokens/max_completion_tokens.
    #[arg(long, default_value_t = 16)]
    pub completion_tokens: u32,
    /// Do not honour the request's max (`max_tokens`, `max_completion_tokens`,
    /// `maxOutputTokens`, `inferenceConfig.maxTokens`): every answer is `completion_tokens`
    /// long and ends as if by itself — an upstream that overruns `max_tokens`, so the
    /// gateway's own cut at the budget's output cap is what stops a stream.
    #[arg(long)]
    pub ignore_max_tokens: bool,
    /// Prompt tokens reported as read from the provider's prompt cache (capped at the
    /// prompt): OpenAI `cached_tokens` and Gemini `cachedContentTokenCount` (both included
    /// in the prompt count), Anthropic `cache_read_input_tokens` and Bedrock
    /// `cacheReadInputTokens` (both excluded from `input_tokens`/`inputTokens`).
    #[arg(long, default_value_t = 0)]
    pub cached_prompt_tokens: u32,
    /// Simulate the provider's automatic prompt cache: each request reports as cached the
    /// longest prefix (at message boundaries) of its prompt that an earlier request to the
    /// same model on this simulator sent within `prompt_cache_ttl_secs`, rounded down to a
    /// multiple of 128 tokens and only from 1,024 tokens (OpenAI's rules), in the same usage
    /// fields as `cached_prompt_tokens`. When on, it replaces `cached_prompt_tokens`.
    #[arg(long)]
    pub prompt_cache: bool,
    /// How long a prompt prefix stays cached after the last request that sent it, seconds
    /// (0 = nothing is ever cached).
    #[arg(long, default_value_t = 300)]
    pub prompt_cache_ttl_secs: u64,
    /// Share of requests (0..=1) answered with `fail_status` and the route's error body.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// HTTP status of injected failures.
    #[arg(long, default_value_t = 500)]
    pub fail_status: u16,
    /// Retry-After seconds sent with 429/503 faults.
    #[arg(long)]
    pub retry_after_secs: Option<u64>,
    /// Share of requests that never answer (hang until the client gives up).
    #[arg(long, default_value_t = 0.0)]
    pub hang_rate: f64,
    /// Share of requests whose connection is reset without any response.
    #[arg(long, default_value_t = 0.0)]
    pub reset_rate: f64,
    /// Share of streams cut mid-way (connection dropped after about half the chunks: no
    /// finish chunk, no usage, no `[DONE]`).
    #[arg(long, default_value_t = 0.0)]
    pub cut_rate: f64,
    /// Context window in prompt tokens: a generation request whose prompt (as the simulator
    /// counts it for usage) exceeds it is refused with the route's real context-length error.
    #[arg(long)]
    pub context_window: Option<u32>,
    /// Share of generation requests (0..=1) refused with the route's real content-policy
    /// answer.
    #[arg(long, default_value_t = 0.0)]
    pub content_filter_rate: f64,
    /// Share of streams (0..=1) that answer 200 and then end with the format's in-stream
    /// error event after `stream_error_after_chunks` content chunks.
    #[arg(long, default_value_t = 0.0)]
    pub stream_error_rate: f64,
    /// Content chunks sent before an injected stream error (0 = the error is the first thing
    /// in the body).
    #[arg(long, default_value_t = 0)]
    pub stream_error_after_chunks: u32,
    /// Every stream stalls — sends nothing more, never ends — after its preamble and this
    /// many content chunks (an upstream that hangs mid-answer; the client's idle timeout is
    /// what ends it).
    #[arg(long)]
    pub stall_after_chunks: Option<u32>,
    /// The next N faultable requests (counted from when the configuration was set) fail with
    /// `fail_status` (and `retry_after_secs`), then requests succeed again.
    #[arg(long, default_value_t = 0)]
    pub fail_first: u32,
    /// When false, streams never carry the usage chunk even if asked (an upstream that ignores
    /// include_usage).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub stream_usage: bool,
    /// If set, requests must carry the key in the route's own header: `Authorization: Bearer`
    /// (OpenAI), `api-key` (Azure), `x-api-key` (Anthropic), `x-goog-api-key` or `?key=`
    /// (Gemini); Bedrock takes any `Authorization`, but a `Bearer` one must match.
    #[arg(long)]
    pub api_key: Option<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            ttft_ms: 0,
            chunk_delay_ms: 0,
            chunks: 0,
            completion_tokens: 16,
            ignore_max_tokens: false,
            cached_prompt_tokens: 0,
            prompt_cache: false,
            prompt_cache_ttl_secs: 300,
            fail_rate: 0.0,
            fail_status: 500,
            retry_after_secs: None,
            hang_rate: 0.0,
            reset_rate: 0.0,
            cut_rate: 0.0,
            context_window: None,
            content_filter_rate: 0.0,
            stream_error_rate: 0.0,
            stream_error_after_chunks: 0,
            stall_after_chunks: None,
            fail_first: 0,
            stream_usage: true,
            api_key: None,
        }
    }
}

/// Why a partial configuration update was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigUpdateError {
    #[error("the configuration update must be a JSON object")]
    NotAnObject,
    #[error("invalid configuration: {0}")]
    Invalid(#[from] serde_json::Error),
}

impl SimConfig {
    /// This configuration with the fields present in `patch` replaced; absent fields keep
    /// their current value (plain deserialisation would reset them to defaults). Unknown
    /// fields are rejected so a typo in a script does not silently do nothing.
    pub fn merged(&self, patch: &Value) -> Result<SimConfig, ConfigUpdateError> {
        let patch = patch.as_object().ok_or(ConfigUpdateError::NotAnObject)?;
        let mut current = serde_json::to_value(self)?;
        if let Some(obj) = current.as_object_mut() {
            for (k, v) in patch {
                obj.insert(k.clone(), v.clone());
            }
        }
        Ok(serde_json::from_value(current)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimConfig,
    }

    #[test]
    fn clap_defaults_match_default() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.sim, SimConfig::default());
        let cli = Cli::try_parse_from([
            "x",
            "--ttft-ms",
            "5",
            "--stream-usage",
            "false",
            "--api-key",
            "k",
            "--fail-rate",
            "0.5",
            "--context-window",
            "100",
            "--fail-first",
            "2",
            "--stream-error-rate",
            "1",
            "--stream-error-after-chunks",
            "3",
            "--content-filter-rate",
            "0.25",
            "--prompt-cache",
            "--prompt-cache-ttl-secs",
            "60",
            "--ignore-max-tokens",
        ])
        .unwrap();
        assert!(cli.sim.ignore_max_tokens);
        assert!(cli.sim.prompt_cache);
        assert_eq!(cli.sim.prompt_cache_ttl_secs, 60);
        assert_eq!(cli.sim.context_window, Some(100));
        assert_eq!(cli.sim.fail_first, 2);
        assert_eq!(cli.sim.stream_error_rate, 1.0);
        assert_eq!(cli.sim.stream_error_after_chunks, 3);
        assert_eq!(cli.sim.content_filter_rate, 0.25);
        assert_eq!(cli.sim.ttft_ms, 5);
        assert!(!cli.sim.stream_usage);
        assert_eq!(cli.sim.api_key.as_deref(), Some("k"));
        assert_eq!(cli.sim.fail_rate, 0.5);
    }

    #[test]
    fn serde_defaults_and_partial_merge() {
        let c: SimConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, SimConfig::default());
        let base = SimConfig {
            ttft_ms: 7,
            api_key: Some("k".into()),
            ..SimConfig::default()
        };
        let m = base.merged(&json!({"fail_rate": 0.25})).unwrap();
        assert_eq!(m.ttft_ms, 7);
        assert_eq!(m.fail_rate, 0.25);
        assert_eq!(m.api_key.as_deref(), Some("k"));
        let m = base.merged(&json!({"prompt_cache": true})).unwrap();
        assert!(m.prompt_cache);
        assert_eq!(m.prompt_cache_ttl_secs, 300);
        let m = base.merged(&json!({"ignore_max_tokens": true})).unwrap();
        assert!(m.ignore_max_tokens);
        assert_eq!(m.completion_tokens, 16);
        let m = base.merged(&json!({"api_key": null})).unwrap();
        assert_eq!(m.api_key, None);
        assert!(base.merged(&json!({"ttft": 1})).is_err());
        assert!(base.merged(&json!({"ttft_ms": "x"})).is_err());
        assert!(base.merged(&json!([1])).is_err());
    }
}
