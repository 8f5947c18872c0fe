//! What an instance type needs, and what the executor has: the scheduler admits a job only when
//! `InstanceCount × InstanceType` fits next to the jobs already running.

use serde::{Deserialize, Serialize};

/// Resources of one instance, or of a whole executor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub vcpus: u32,
    pub memory_gib: f64,
    pub gpus: u32,
    /// AWS Trainium/Inferentia devices.
    pub neuron_devices: u32,
}

impl Resources {
    /// Nothing.
    pub const ZERO: Resources = Resources {
        vcpus: 0,
        memory_gib: 0.0,
        gpus: 0,
        neuron_devices: 0,
    };

    /// Sum of two.
    pub fn plus(self, o: Resources) -> Resources {
        Resources {
            vcpus: self.vcpus + o.vcpus,
            memory_gib: self.memory_gib + o.memory_gib,
            gpus: self.gpus + o.gpus,
            neuron_devices: self.neuron_devices + o.neuron_devices,
        }
    }

    /// What is left of `self` when `used` is taken (never below zero).
    pub fn minus(self, used: Resources) -> Resources {
        Resources {
            vcpus: self.vcpus.saturating_sub(used.vcpus),
            memory_gib: (self.memory_gib - used.memory_gib).max(0.0),
            gpus: self.gpus.saturating_sub(used.gpus),
            neuron_devices: self.neuron_devices.saturating_sub(used.neuron_devices),
        }
    }

    /// `self` repeated `n` times.
    pub fn times(self, n: u32) -> Resources {
        Resources {
            vcpus: self.vcpus * n,
            memory_gib: self.memory_gib * f64::from(n),
            gpus: self.gpus * n,
            neuron_devices: self.neuron_devices * n,
        }
    }

    /// Whether `need` fits in `self`.
    pub fn holds(&self, need: &Resources) -> bool {
        need.vcpus <= self.vcpus
            && need.memory_gib <= self.memory_gib + 1e-9
            && need.gpus <= self.gpus
            && need.neuron_devices <= self.neuron_devices
    }

    /// What is short when `need` does not fit in `self`, in words.
    pub fn shortfall(&self, need: &Resources) -> String {
        let mut parts = Vec::new();
        if need.vcpus > self.vcpus {
            parts.push(format!("{} vCPUs (has {})", need.vcpus, self.vcpus));
        }
        if need.memory_gib > self.memory_gib + 1e-9 {
            parts.push(format!("{} GiB of memory (has {})", need.memory_gib, self.memory_gib));
        }
        if need.gpus > self.gpus {
            parts.push(format!("{} GPUs (has {})", need.gpus, self.gpus));
        }
        if need.neuron_devices > self.neuron_devices {
            parts.push(format!(
                "{} Neuron devices (has {})",
                need.neuron_devices, self.neuron_devices
            ));
        }
        parts.join(", ")
    }
}

/// The resources of an `ml.<family>.<size>` instance type (vCPUs and GPUs as on AWS; memory
/// approximated by family).
pub fn instance_resources(instance_type: &str) -> Option<Resources> {
    let mut parts = instance_type.split('.');
    if parts.next()? != "ml" {
        return None;
    }
    let family = parts.next()?;
    let size = parts.next()?;
    let vcpus: u32 = match size {
        "medium" | "large" => 2,
        "xlarge" => 4,
        s => 4 * s.strip_suffix("xlarge")?.parse::<u32>().ok()?,
    };
    let gib_per_vcpu = match family.chars().next()? {
        'c' => 2.0,
        'r' => 8.0,
        'p' => 8.0,
        _ => 4.0,
    };
    let n: u32 = size.strip_suffix("xlarge").and_then(|s| s.parse().ok()).unwrap_or(1);
    let gpus = match family {
        f if f.starts_with("g4dn") => {
            if n == 12 {
                4
            } else {
                1
            }
        }
        f if f.starts_with("g5") || f.starts_with("g6") => match n {
            12 | 24 => 4,
            48 => 8,
            _ => 1,
        },
        f if f.starts_with("g7e") => match n {
            12 => 2,
            24 => 4,
            48 => 8,
            _ => 1,
        },
        "p2" => match n {
            8 => 8,
            16 => 16,
            _ => 1,
        },
        "p3" => match n {
            8 => 4,
            16 => 8,
            _ => 1,
        },
        "p5" if n == 4 => 1,
        "p6e-gb200" => 4,
        f if f.starts_with('p') => 8,
        _ => 0,
    };
    let neuron_devices = match family {
        f if f.starts_with("trn") => {
            if n == 2 {
                1
            } else {
                16
            }
        }
        _ => 0,
    };
    Some(Resources {
        vcpus,
        memory_gib: f64::from(vcpus) * gib_per_vcpu,
        gpus,
        neuron_devices,
    })
}

/// What a job needs: the sum over its hosts.
pub fn job_needs(hosts: &[(String, u32)]) -> Option<Resources> {
    let mut total = Resources::ZERO;
    for (t, n) in hosts {
        total = total.plus(instance_resources(t)?.times(*n));
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_types() {
        let m5 = instance_resources("ml.m5.xlarge").unwrap();
        assert_eq!((m5.vcpus, m5.memory_gib, m5.gpus), (4, 16.0, 0));
        assert_eq!(instance_resources("ml.p3.8xlarge").unwrap().gpus, 4);
        assert_eq!(instance_resources("ml.g5.48xlarge").unwrap().gpus, 8);
        assert_eq!(instance_resources("ml.c5.large").unwrap().vcpus, 2);
        assert_eq!(instance_resources("ml.trn1.32xlarge").unwrap().neuron_devices, 16);
        assert!(instance_resources("m5.large").is_none());
    }

    #[test]
    fn every_model_instance_type_is_known() {
        let model: serde_json::Value =
            serde_json::from_str(include_str!("../../kiln-api/model/sagemaker.json")).unwrap();
        for t in model["shapes"]["TrainingInstanceType"]["enum"].as_array().unwrap() {
            assert!(instance_resources(t.as_str().unwrap()).is_some(), "{t}");
        }
    }

    #[test]
    fn fitting() {
        let cap = Resources {
            vcpus: 8,
            memory_gib: 32.0,
            gpus: 0,
            neuron_devices: 0,
        };
        let need = job_needs(&[("ml.m5.xlarge".into(), 2)]).unwrap();
        assert!(cap.holds(&need));
        let gpu = job_needs(&[("ml.g5.xlarge".into(), 1)]).unwrap();
        assert!(!cap.holds(&gpu) && cap.shortfall(&gpu).contains("1 GPUs (has 0)"));
    }
}
