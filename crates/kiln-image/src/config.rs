//! The parts of an image's config blob that decide how its process starts.

use std::collections::BTreeMap;

use serde::Deserialize;

/// How the image wants to be run: `ENTRYPOINT`, `CMD`, `ENV`, `WORKDIR`, `USER`, `EXPOSE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `ENTRYPOINT` in exec form (Docker stores the shell form as `["/bin/sh", "-c", "…"]`).
    pub entrypoint: Vec<String>,
    /// `CMD`: the default arguments of the entrypoint, or the command when there is no entrypoint.
    pub cmd: Vec<String>,
    /// `ENV`, in the image's order, as `(name, value)`.
    pub env: Vec<(String, String)>,
    /// `WORKDIR`, an absolute path inside the image; `None` means `/`.
    pub working_dir: Option<String>,
    /// `USER` (`name`, `uid`, `uid:gid`, …) as written in the image.
    pub user: Option<String>,
    /// `EXPOSE`, e.g. `8080/tcp`, sorted.
    pub exposed_ports: Vec<String>,
    /// The image's OS as its config says (`linux`).
    pub os: String,
    /// The image's CPU architecture as its config says (`amd64`).
    pub architecture: String,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    config: Option<ContainerConfig>,
}

// Docker writes `null` for unset fields, hence Option everywhere.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde::de::IgnoredAny>>,
}

impl ImageConfig {
    /// Reads an image config blob (`application/vnd.oci.image.config.v1+json` or Docker's).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let file: ConfigFile = serde_json::from_slice(bytes)
            .map_err(|e| format!("the image config is not the JSON the OCI image spec describes: {e}"))?;
        let config = file.config.unwrap_or_default();
        let env = config
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|entry| match entry.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => (entry, String::new()),
            })
            .collect();
        Ok(Self {
            entrypoint: config.entrypoint.unwrap_or_default(),
            cmd: config.cmd.unwrap_or_default(),
            env,
            working_dir: config.working_dir.filter(|w| !w.is_empty()),
            user: config.user.filter(|u| !u.is_empty()),
            exposed_ports: config.exposed_ports.unwrap_or_default().into_keys().collect(),
            os: file.os.unwrap_or_default(),
            architecture: file.architecture.unwrap_or_default(),
        })
    }

    /// The argv Docker runs for `docker run IMAGE ARGS…`: the entrypoint followed by `args`, or by
    /// `Cmd` when `args` is empty. SageMaker runs training images with the single argument `train`.
    pub fn command(&self, args: &[String]) -> Vec<String> {
        let tail = if args.is_empty() { &self.cmd } else { args };
        self.entrypoint.iter().chain(tail).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_docker_config() -> Result<(), String> {
        let blob = br#"{"architecture":"amd64","os":"linux","config":{
            "Entrypoint":["/train"],"Cmd":null,"Env":["PATH=/usr/bin:/bin","EMPTY=","A=b=c"],
            "WorkingDir":"/opt/ml/code","User":"1000:1000","ExposedPorts":{"8080/tcp":{},"443/tcp":{}},
            "Labels":{"x":"y"}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config = ImageConfig::parse(blob)?;
        assert_eq!(config.entrypoint, vec!["/train"]);
        assert!(config.cmd.is_empty());
        assert_eq!(
            config.env,
            vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("EMPTY".into(), String::new()),
                ("A".into(), "b=c".into())
            ]
        );
        assert_eq!(config.working_dir.as_deref(), Some("/opt/ml/code"));
        assert_eq!(config.user.as_deref(), Some("1000:1000"));
        assert_eq!(config.exposed_ports, vec!["443/tcp", "8080/tcp"]);
        assert_eq!((config.os.as_str(), config.architecture.as_str()), ("linux", "amd64"));
        Ok(())
    }

    #[test]
    fn a_config_without_a_config_section_is_empty() -> Result<(), String> {
        let config = ImageConfig::parse(br#"{"os":"linux"}"#)?;
        assert_eq!(config.command(&[]), Vec::<String>::new());
        assert!(
            ImageConfig::parse(b"{\"config\": {\"Env\": \"not a list\"}}")
                .unwrap_err()
                .contains("OCI image spec")
        );
        Ok(())
    }

    #[test]
    fn command_follows_docker_run() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut config = ImageConfig {
            entrypoint: args(&["/bin/sh", "-c"]),
            cmd: args(&["serve"]),
            ..Default::default()
        };
        assert_eq!(config.command(&args(&["train"])), args(&["/bin/sh", "-c", "train"]));
        assert_eq!(config.command(&[]), args(&["/bin/sh", "-c", "serve"]));
        config.entrypoint.clear();
        assert_eq!(config.command(&args(&["train"])), args(&["train"]));
    }
}
