//! What the cluster has: the partition's nodes with their CPUs, memory and generic resources
//! (GPUs), read from slurmrestd. From it come kiln's capacity (the sums) and the check that a job
//! could ever run (each host needs a node of its own that holds what its instance type asks).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::capacity::Resources;

/// One generic resource: `gpu:a100:4` is name `gpu`, kind `a100`, count 4.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gres {
    pub name: String,
    pub kind: Option<String>,
    pub count: u64,
}

impl std::fmt::Display for Gres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Some(k) => write!(f, "{}:{k}:{}", self.name, self.count),
            None => write!(f, "{}:{}", self.name, self.count),
        }
    }
}

impl Gres {
    /// Any kind of `name` (a count of one, for looking up).
    fn named(name: &str) -> Gres {
        Gres {
            name: name.into(),
            kind: None,
            count: 1,
        }
    }
}

/// Reads a gres list as Slurm writes it for nodes and jobs: `gpu:4`, `gpu:a100:2(S:0-1),mps:200`,
/// `gres:gpu:1` (a job's TRES form). A name alone counts 1.
pub fn parse_gres(text: &str) -> Result<Vec<Gres>, String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut item = String::new();
    let mut items = Vec::new();
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => items.push(std::mem::take(&mut item)),
            _ if depth == 0 => item.push(c),
            _ => {}
        }
    }
    items.push(item);
    for item in items {
        let item = item.trim();
        let item = item.strip_prefix("gres:").unwrap_or(item);
        if item.is_empty() || item == "(null)" {
            continue;
        }
        let parts: Vec<&str> = item.split(':').collect();
        let count_of = |s: &str| -> Result<u64, String> {
            let (digits, scale) = match s.chars().last() {
                Some('k' | 'K') => (&s[..s.len() - 1], 1024),
                Some('m' | 'M') => (&s[..s.len() - 1], 1024 * 1024),
                Some('g' | 'G') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
                _ => (s, 1),
            };
            digits
                .parse::<u64>()
                .map(|n| n * scale)
                .map_err(|_| format!("gres '{text}': '{s}' is not a count"))
        };
        let g = match parts.as_slice() {
            [name] => Gres {
                name: name.to_string(),
                kind: None,
                count: 1,
            },
            [name, n] if n.starts_with(|c: char| c.is_ascii_digit()) => Gres {
                name: name.to_string(),
                kind: None,
                count: count_of(n)?,
            },
            [name, kind] => Gres {
                name: name.to_string(),
                kind: Some(kind.to_string()),
                count: 1,
            },
            [name, kind, n] => Gres {
                name: name.to_string(),
                kind: Some(kind.to_string()),
                count: count_of(n)?,
            },
            _ => return Err(format!("gres '{text}': '{item}' is not name[:type][:count]")),
        };
        out.push(g);
    }
    Ok(out)
}

/// How much of `want` (a name, maybe a kind) a list of node gres holds.
fn gres_count(have: &[Gres], want: &Gres) -> u64 {
    have.iter()
        .filter(|g| g.name == want.name && (want.kind.is_none() || g.kind == want.kind))
        .map(|g| g.count)
        .sum()
}

/// What one host asks of its node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeRequest {
    pub cpus: u32,
    pub memory_mib: u64,
    pub gres: Vec<Gres>,
}

impl NodeRequest {
    /// `2 CPUs, 8192 MiB of memory, gres gpu:1`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} CPUs and {} MiB of memory", self.cpus, self.memory_mib);
        if !self.gres.is_empty() {
            let g: Vec<String> = self.gres.iter().map(Gres::to_string).collect();
            s.push_str(&format!(" and gres {}", g.join(",")));
        }
        s
    }

    /// The request as kiln counts resources (what a host gets: `SM_NUM_CPUS`, `SM_NUM_GPUS`).
    pub fn resources(&self) -> Resources {
        Resources {
            vcpus: self.cpus,
            memory_gib: self.memory_mib as f64 / 1024.0,
            gpus: u32::try_from(gres_count(&self.gres, &Gres::named("gpu"))).unwrap_or(u32::MAX),
            neuron_devices: u32::try_from(gres_count(&self.gres, &Gres::named("neuron"))).unwrap_or(u32::MAX),
        }
    }

    /// The request as Slurm's `gres` option takes it (`gpu:1,nic:1`), if any.
    pub fn gres_option(&self) -> Option<String> {
        (!self.gres.is_empty()).then(|| self.gres.iter().map(Gres::to_string).collect::<Vec<_>>().join(","))
    }
}

/// A node of the partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub gres: Vec<Gres>,
    /// `idle`, `allocated`, `down`, ... and flags such as `DRAIN` or `NOT_RESPONDING`.
    pub state: String,
    pub flags: Vec<String>,
    /// Why an administrator or Slurm set it down or draining.
    pub reason: String,
}

impl Node {
    fn holds(&self, r: &NodeRequest) -> bool {
        r.cpus <= self.cpus
            && r.memory_mib <= self.memory_mib
            && r.gres.iter().all(|g| g.count <= gres_count(&self.gres, g))
    }

    /// Whether Slurm counts the node as failed or taken out of service.
    pub fn failed(&self) -> bool {
        let bad = |s: &str| {
            let s = s.to_ascii_uppercase();
            ["DOWN", "FAIL", "DRAIN", "NOT_RESPONDING", "POWER_DOWN", "REBOOT"]
                .iter()
                .any(|b| s.contains(b))
        };
        bad(&self.state) || self.flags.iter().any(|f| bad(f))
    }

    /// `DOWN (reason: kiln-test)`.
    pub fn describe_state(&self) -> String {
        let mut s = self.state.to_ascii_uppercase();
        for f in &self.flags {
            s.push('+');
            s.push_str(&f.to_ascii_uppercase());
        }
        if !self.reason.is_empty() {
            s.push_str(&format!(" (reason: {})", self.reason));
        }
        s
    }
}

/// The partition jobs go to, and its nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub partition: String,
    pub nodes: Vec<Node>,
    /// The partition's `MaxNodes` per job, if limited.
    pub max_nodes_per_job: Option<u32>,
}

/// slurmrestd's node record (the fields kiln reads).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NodeRecord {
    pub name: String,
    pub cpus: Option<i64>,
    pub real_memory: Option<i64>,
    pub gres: Option<String>,
    pub state: Option<String>,
    pub state_flags: Vec<String>,
    pub reason: Option<String>,
    pub partitions: Vec<String>,
}

impl NodeRecord {
    /// The node as kiln uses it (a gres list Slurm writes oddly is ignored rather than fatal).
    pub fn node(&self) -> Node {
        Node {
            name: self.name.clone(),
            cpus: self.cpus.and_then(|c| u32::try_from(c).ok()).unwrap_or(0),
            memory_mib: self.real_memory.and_then(|m| u64::try_from(m).ok()).unwrap_or(0),
            gres: self
                .gres
                .as_deref()
                .map(parse_gres)
                .and_then(Result::ok)
                .unwrap_or_default(),
            state: self.state.clone().unwrap_or_default(),
            flags: self.state_flags.clone(),
            reason: self.reason.clone().unwrap_or_default(),
        }
    }
}

/// slurmrestd's partition record (the fields kiln reads).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PartitionRecord {
    pub name: String,
    pub nodes: Option<String>,
    pub flags: Vec<String>,
    pub maximum_nodes_per_job: Option<i64>,
}

impl Cluster {
    /// The partition named `wanted` (or the cluster's default partition) with its nodes.
    pub fn from_records(
        wanted: Option<&str>,
        partitions: &[PartitionRecord],
        nodes: &[NodeRecord],
    ) -> Result<Cluster, String> {
        let partition = match wanted {
            Some(name) => partitions.iter().find(|p| p.name == name).ok_or_else(|| {
                let known: Vec<&str> = partitions.iter().map(|p| p.name.as_str()).collect();
                format!(
                    "the Slurm cluster has no partition '{name}' (it has: {}); set [slurm] partition to one of them",
                    known.join(", ")
                )
            })?,
            None => partitions
                .iter()
                .find(|p| p.flags.iter().any(|f| f.eq_ignore_ascii_case("default")))
                .ok_or("the Slurm cluster has no default partition; set [slurm] partition")?,
        };
        let names = super::nodelist::expand(partition.nodes.as_deref().unwrap_or_default())?;
        let nodes = nodes
            .iter()
            .filter(|n| names.contains(&n.name) || n.partitions.contains(&partition.name))
            .map(NodeRecord::node)
            .collect();
        Ok(Cluster {
            partition: partition.name.clone(),
            nodes,
            max_nodes_per_job: partition
                .maximum_nodes_per_job
                .filter(|&m| m > 0)
                .and_then(|m| u32::try_from(m).ok()),
        })
    }

    /// The sums over the partition's nodes, as kiln counts capacity.
    pub fn capacity(&self) -> Resources {
        self.nodes.iter().fold(Resources::ZERO, |sum, n| {
            let all = NodeRequest {
                cpus: n.cpus,
                memory_mib: n.memory_mib,
                gres: n.gres.clone(),
            };
            sum.plus(all.resources())
        })
    }

    /// Whether hosts asking for `requests` (one node each; `instance type → request, host count`)
    /// could ever run on the partition, were every node free. The error says what is missing.
    pub fn fits(&self, requests: &[(String, NodeRequest, usize)]) -> Result<(), String> {
        let hosts: usize = requests.iter().map(|(_, _, n)| n).sum();
        let names = self.node_names();
        if hosts > self.nodes.len() {
            return Err(format!(
                "it needs {hosts} Slurm nodes (one per instance) and partition '{}' has {} ({names})",
                self.partition,
                self.nodes.len()
            ));
        }
        if let Some(most) = self.max_nodes_per_job
            && hosts > most as usize
        {
            return Err(format!(
                "it needs {hosts} Slurm nodes (one per instance) and partition '{}' allows at most {most} per job",
                self.partition
            ));
        }
        // Hosts of one request are interchangeable: grouped by request, a node for every host
        // exists iff every set of requests has at least as many nodes that hold one of them as it
        // has hosts (Hall's theorem). Jobs have a handful of instance groups, so every set is tried.
        let mut groups: BTreeMap<&NodeRequest, (usize, Vec<&str>)> = BTreeMap::new();
        for (itype, request, n) in requests {
            let e = groups.entry(request).or_default();
            e.0 += n;
            e.1.push(itype);
        }
        let groups: Vec<(&NodeRequest, usize, Vec<&str>)> =
            groups.into_iter().map(|(r, (n, types))| (r, n, types)).collect();
        for (request, _, types) in &groups {
            if !self.nodes.iter().any(|node| node.holds(request)) {
                return Err(format!(
                    "{} asks each Slurm node for {}, and no node of partition '{}' has that ({}); \
                     set what it asks of Slurm in [slurm.instance_types.\"{}\"] (cpus, memory_mib, gres)",
                    types.join(", "),
                    request.describe(),
                    self.partition,
                    self.largest(),
                    types[0]
                ));
            }
        }
        if groups.len() <= 12 {
            for subset in 1u32..(1 << groups.len()) {
                let chosen: Vec<&(&NodeRequest, usize, Vec<&str>)> = groups
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| subset & (1 << i) != 0)
                    .map(|(_, g)| g)
                    .collect();
                let need: usize = chosen.iter().map(|g| g.1).sum();
                let have = self
                    .nodes
                    .iter()
                    .filter(|node| chosen.iter().any(|g| node.holds(g.0)))
                    .count();
                if need > have {
                    let types: Vec<&str> = chosen.iter().flat_map(|g| g.2.iter().copied()).collect();
                    return Err(format!(
                        "its {need} instances of {} need a Slurm node each that holds what they ask, \
                         and partition '{}' has {have} such nodes ({names})",
                        types.join(", "),
                        self.partition
                    ));
                }
            }
        }
        Ok(())
    }

    fn node_names(&self) -> String {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        if names.len() > 8 {
            format!("{}, ...", names[..8].join(", "))
        } else {
            names.join(", ")
        }
    }

    /// The most any one node has, in words.
    fn largest(&self) -> String {
        let cpus = self.nodes.iter().map(|n| n.cpus).max().unwrap_or(0);
        let mem = self.nodes.iter().map(|n| n.memory_mib).max().unwrap_or(0);
        let mut gres: BTreeMap<String, u64> = BTreeMap::new();
        for n in &self.nodes {
            for g in &n.gres {
                let key = match &g.kind {
                    Some(k) => format!("{}:{k}", g.name),
                    None => g.name.clone(),
                };
                let e = gres.entry(key).or_default();
                *e = (*e).max(g.count);
            }
        }
        let mut s = format!("the most on one node: {cpus} CPUs, {mem} MiB");
        for (k, n) in gres {
            s.push_str(&format!(", {k}:{n}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpus: u32, mem: u64, gres: &str) -> Node {
        Node {
            name: name.into(),
            cpus,
            memory_mib: mem,
            gres: parse_gres(gres).unwrap(),
            state: "idle".into(),
            flags: vec![],
            reason: String::new(),
        }
    }

    fn req(cpus: u32, mem: u64, gres: &str) -> NodeRequest {
        NodeRequest {
            cpus,
            memory_mib: mem,
            gres: parse_gres(gres).unwrap(),
        }
    }

    fn cluster(nodes: Vec<Node>) -> Cluster {
        Cluster {
            partition: "debug".into(),
            nodes,
            max_nodes_per_job: None,
        }
    }

    #[test]
    fn gres_lists_as_slurm_writes_them() {
        assert_eq!(parse_gres("").unwrap(), vec![]);
        assert_eq!(parse_gres("(null)").unwrap(), vec![]);
        let g = parse_gres("gpu:a100:4(S:0-1),mps:2K,nic").unwrap();
        assert_eq!(g[0].to_string(), "gpu:a100:4");
        assert_eq!(g[1].count, 2048);
        assert_eq!(g[2].to_string(), "nic:1");
        assert_eq!(parse_gres("gres:gpu:2").unwrap()[0].to_string(), "gpu:2");
        assert!(parse_gres("gpu:a:b:c").is_err());
        assert!(parse_gres("gpu:a100:x").is_err());
    }

    #[test]
    fn typed_requests_count_only_their_kind() {
        let n = node("g1", 8, 1000, "gpu:a100:2,gpu:t4:2");
        assert!(n.holds(&req(1, 1, "gpu:4")));
        assert!(n.holds(&req(1, 1, "gpu:a100:2")));
        assert!(!n.holds(&req(1, 1, "gpu:a100:3")));
        assert!(!n.holds(&req(1, 1, "gpu:h100:1")));
    }

    #[test]
    fn capacity_sums_the_nodes() {
        let c = cluster(vec![node("a", 2, 2048, "gpu:1"), node("b", 4, 1024, "")]);
        let cap = c.capacity();
        assert_eq!((cap.vcpus, cap.memory_gib, cap.gpus), (6, 3.0, 1));
    }

    #[test]
    fn too_many_hosts_or_too_big_an_instance_never_fits() {
        let c = cluster(vec![node("node1", 2, 11819, ""), node("node2", 2, 11819, "")]);
        let large = req(2, 8192, "");
        assert_eq!(c.fits(&[("ml.m5.large".into(), large.clone(), 2)]), Ok(()));
        let e = c.fits(&[("ml.m5.large".into(), large, 3)]).unwrap_err();
        assert!(
            e.contains("needs 3 Slurm nodes") && e.contains("has 2 (node1, node2)"),
            "{e}"
        );
        let e = c.fits(&[("ml.m5.xlarge".into(), req(4, 16384, ""), 1)]).unwrap_err();
        assert!(
            e.contains("ml.m5.xlarge asks each Slurm node for 4 CPUs") && e.contains("2 CPUs, 11819 MiB"),
            "{e}"
        );
        assert!(e.contains("[slurm.instance_types.\"ml.m5.xlarge\"]"), "{e}");
        let e = c.fits(&[("ml.g5.xlarge".into(), req(1, 1, "gpu:1"), 1)]).unwrap_err();
        assert!(e.contains("gres gpu:1"), "{e}");
    }

    #[test]
    fn hosts_of_several_groups_need_distinct_nodes_that_hold_them() {
        // One GPU node and two CPU nodes: two GPU hosts cannot run, though the sums would allow it.
        let c = cluster(vec![
            node("gpu1", 8, 64000, "gpu:8"),
            node("cpu1", 8, 64000, ""),
            node("cpu2", 8, 64000, ""),
        ]);
        let gpu = req(8, 32000, "gpu:4");
        let cpu = req(2, 8000, "");
        assert_eq!(
            c.fits(&[("g".into(), gpu.clone(), 1), ("c".into(), cpu.clone(), 2)]),
            Ok(())
        );
        let e = c.fits(&[("g".into(), gpu, 2), ("c".into(), cpu, 1)]).unwrap_err();
        assert!(e.contains("2 instances of g") && e.contains("has 1 such nodes"), "{e}");
    }

    #[test]
    fn max_nodes_per_job_is_a_limit() {
        let mut c = cluster(vec![node("a", 2, 1, ""), node("b", 2, 1, "")]);
        c.max_nodes_per_job = Some(1);
        assert!(
            c.fits(&[("t".into(), req(1, 1, ""), 2)])
                .unwrap_err()
                .contains("at most 1 per job")
        );
    }

    #[test]
    fn the_partition_and_its_nodes_come_from_the_records() {
        let parts: Vec<PartitionRecord> = serde_json::from_value(serde_json::json!([
            {"name": "debug", "nodes": "node[1-2]", "flags": ["default"], "maximum_nodes_per_job": -1},
            {"name": "gpu", "nodes": "g1", "flags": [], "maximum_nodes_per_job": 4}
        ]))
        .unwrap();
        let nodes: Vec<NodeRecord> = serde_json::from_value(serde_json::json!([
            {"name": "node1", "cpus": 2, "real_memory": 11819, "gres": "", "state": "idle", "state_flags": [], "partitions": ["debug"]},
            {"name": "node2", "cpus": 2, "real_memory": 11819, "gres": "", "state": "down", "state_flags": ["DRAIN"], "reason": "x", "partitions": ["debug"]},
            {"name": "g1", "cpus": 8, "real_memory": 1, "gres": "gpu:2", "state": "idle", "partitions": ["gpu"]}
        ]))
        .unwrap();
        let c = Cluster::from_records(None, &parts, &nodes).unwrap();
        assert_eq!(
            (c.partition.as_str(), c.nodes.len(), c.max_nodes_per_job),
            ("debug", 2, None)
        );
        assert!(c.nodes[1].failed() && !c.nodes[0].failed());
        assert_eq!(c.nodes[1].describe_state(), "DOWN+DRAIN (reason: x)");
        let g = Cluster::from_records(Some("gpu"), &parts, &nodes).unwrap();
        assert_eq!((g.nodes.len(), g.max_nodes_per_job, g.capacity().gpus), (1, Some(4), 2));
        let e = Cluster::from_records(Some("nope"), &parts, &nodes).unwrap_err();
        assert!(e.contains("no partition 'nope'") && e.contains("debug, gpu"), "{e}");
    }
}
