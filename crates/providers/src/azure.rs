//! Azure OpenAI: the OpenAI wire format behind deployment URLs.
//!
//! `base_url` is the resource endpoint (`https://{resource}.openai.azure.com`); the deployment
//! name is the deployment's `model` in Tollgate config; `api-version` is required; the key goes
//! in the `api-key` header. Azure's extra annotation chunks (`prompt_filter_results`, empty
//! `choices`) pass through: clients of the OpenAI wire format ignore them, and metering reads
//! usage only from chunks that carry it.

use crate::openai::{Flavor, OpenAi};
use crate::{BuildError, ProviderSettings};

pub fn new(settings: ProviderSettings) -> Result<OpenAi, BuildError> {
    let api_version = settings
        .api_version
        .clone()
        .ok_or_else(|| BuildError::BaseUrl {
            url: settings.base_url.clone(),
            reason: "azure providers need api_version".into(),
        })?;
    OpenAi::with_flavor(settings, Flavor::Azure { api_version })
}
