//! AWS Signature Version 4 for Bedrock requests, on top of the maintained `aws-sigv4` crate (the
//! signer the AWS SDKs use) rather than the SDK itself.
//!
//! What gets signed: the method, the URL (its path canonicalised by the signer with the
//! double percent-encoding AWS expects of every service but S3 — the model id is already encoded
//! once in the URL, so `:` travels as `%3A` and is signed as `%253A`), the `host`, `content-type`
//! and `x-amz-date` headers (plus `x-amz-security-token` for temporary credentials) and the
//! SHA-256 of the exact body bytes that are sent. Other headers — extra static headers from
//! config, `accept`, `content-length` — stay unsigned, so a proxy that adds or rewrites them
//! does not invalidate the signature.
//!
//! The signing time is a parameter: production passes the wall clock, tests a fixed instant so
//! the signature is a known answer.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

/// The service name in the credential scope: Bedrock's endpoint prefix is `bedrock-runtime`, but
/// its signing name is `bedrock` (botocore service model, `metadata.signingName`).
pub const SERVICE: &str = "bedrock";

#[derive(Debug, Clone, thiserror::Error)]
#[error("SigV4 signing failed: {0}")]
pub struct SignError(String);

/// Signs requests for one region with static credentials.
#[derive(Clone)]
pub struct Signer {
    credentials: Credentials,
    region: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Credentials`' own Debug redacts the secret; the key id is not printed either.
        f.debug_struct("Signer")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
        region: &str,
    ) -> Self {
        Signer {
            credentials: Credentials::new(
                access_key_id,
                secret_access_key,
                session_token.map(str::to_string),
                None,
                "tollgate-config",
            ),
            region: region.to_string(),
        }
    }

    /// The headers to add to a request: `authorization`, `x-amz-date` and, with a session
    /// token, `x-amz-security-token`. `url` must be the exact URL sent (already
    /// percent-encoded), `headers` the signed headers other than `host` and `x-amz-*`.
    pub fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(&'static str, String)>, SignError> {
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| SignError(e.to_string()))?
            .into();
        let request = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| SignError(e.to_string()))?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|e| SignError(e.to_string()))?
            .into_parts();
        let (out, _query) = instructions.into_parts();
        Ok(out
            .into_iter()
            .map(|h| (h.name(), h.value().to_string()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn signs_with_scope_and_token() {
        let s = Signer::new("AKIDEXAMPLE", "secret", Some("token-1"), "eu-west-3");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_323_045); // 2026-01-02T03:04:05Z
        let h = s
            .sign(
                "POST",
                "https://bedrock-runtime.eu-west-3.amazonaws.com/model/a%3Ab/converse",
                &[("content-type", "application/json")],
                b"{}",
                t,
            )
            .unwrap();
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-amz-date"), Some("20260102T030405Z"));
        assert_eq!(get("x-amz-security-token"), Some("token-1"));
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260102/eu-west-3/bedrock/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
            ),
            "{auth}"
        );
        assert!(!format!("{s:?}").contains("AKIDEXAMPLE"));
    }
}
