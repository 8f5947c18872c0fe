//! kiln's container images: pulls an image from an OCI/Docker registry and unpacks it into a cache,
//! so that a training job can run the image's entrypoint in kiln's own sandbox.
//!
//! [`Puller::pull`] takes a reference as `docker pull` does (`busybox`, `registry.example:5000/team/
//! train:1`, `repo@sha256:…`), speaks the Registry HTTP API v2 (anonymous, Bearer-token and Basic
//! auth; OCI image indexes and manifests, Docker manifest lists and schema 2 manifests), verifies
//! every blob's sha256, and applies the layers in order (gzip, zstd or plain tar; whiteouts and
//! opaque directories honoured; nothing written outside the rootfs) into
//! `<cache>/images/sha256/<manifest digest>/rootfs`. Images are built beside the cache and renamed
//! into it, so a crash never leaves half an image and concurrent pulls end with one good copy; a
//! second pull of a tag costs one `HEAD`, of a digest nothing. [`Registries`] is the `[[registries]]`
//! table of `kiln.toml` (credentials, plain HTTP, mirrors). Errors ([`PullError`]) name the image, the
//! registry and its answer, ready for a job's `FailureReason`.
//!
//! This crate does not run anything: starting the entrypoint, the sandbox, mounts and `/opt/ml` are the
//! job runtime's. It does not push images, evict old ones from the cache, or talk to docker or podman.

mod auth;
mod cache;
mod config;
mod digest;
mod error;
mod manifest;
mod progress;
mod pull;
mod reference;
mod registry;
mod settings;
mod unpack;
mod zstd;

pub use config::ImageConfig;
pub use digest::Digest;
pub use error::PullError;
pub use manifest::Platform;
pub use progress::Progress;
pub use pull::{Image, Puller};
pub use reference::{DOCKER_HUB, Reference, ReferenceError};
pub use settings::{Registries, RegistrySettings, SettingsError};
