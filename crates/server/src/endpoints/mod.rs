//! The data-plane endpoints, reduced to their wire formats: each implements
//! [`crate::exchange::Endpoint`] (parse into the canonical request, build the provider call,
//! render answers, errors and cache hits) and hands its handler to [`crate::exchange::run`].

pub(crate) mod chat;
pub(crate) mod embeddings;
pub(crate) mod messages;
pub(crate) mod models;
