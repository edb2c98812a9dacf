//! Resource fit and resource-based scores (0 to 100, as kube-scheduler's plugins give).

/// CPU in millicores and memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Millicores.
    pub milli_cpu: u64,
    /// Bytes.
    pub memory: u64,
}

impl Resources {
    /// The sum of two requests.
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu + other.milli_cpu,
            memory: self.memory + other.memory,
        }
    }

    /// `self` without `other` (never below zero).
    pub fn minus(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_sub(other.milli_cpu),
            memory: self.memory.saturating_sub(other.memory),
        }
    }
}

/// Whether a pod requesting `request` fits on a node with `allocatable` where `requested` is
/// already taken; on failure, the reasons in kube-scheduler's words.
pub fn fits(
    allocatable: Resources,
    requested: Resources,
    request: Resources,
) -> Result<(), Vec<&'static str>> {
    let total = requested.plus(request);
    let mut reasons = Vec::new();
    if total.milli_cpu > allocatable.milli_cpu {
        reasons.push("Insufficient cpu");
    }
    if total.memory > allocatable.memory {
        reasons.push("Insufficient memory");
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

fn free_fraction(capacity: u64, used: u64) -> f64 {
    if capacity == 0 {
        0.0
    } else {
        capacity.saturating_sub(used) as f64 / capacity as f64
    }
}

/// Favours nodes with more room left after placing the pod: the mean free fraction of CPU and
/// memory, times 100.
pub fn least_allocated_score(
    allocatable: Resources,
    requested: Resources,
    request: Resources,
) -> u64 {
    let total = requested.plus(request);
    let cpu = free_fraction(allocatable.milli_cpu, total.milli_cpu);
    let mem = free_fraction(allocatable.memory, total.memory);
    ((cpu + mem) / 2.0 * 100.0).round() as u64
}

/// Favours nodes whose CPU and memory would be used in equal proportion:
/// `(1 - |cpu fraction - memory fraction|) * 100`.
pub fn balanced_allocation_score(
    allocatable: Resources,
    requested: Resources,
    request: Resources,
) -> u64 {
    let total = requested.plus(request);
    let cpu = 1.0 - free_fraction(allocatable.milli_cpu, total.milli_cpu);
    let mem = 1.0 - free_fraction(allocatable.memory, total.memory);
    ((1.0 - (cpu - mem).abs()) * 100.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const NODE: Resources = Resources {
        milli_cpu: 2000,
        memory: 4 * GIB,
    };

    #[test]
    fn a_pod_that_does_not_fit_gets_kube_scheduler_reasons() {
        let used = Resources {
            milli_cpu: 1500,
            memory: GIB,
        };
        assert!(
            fits(
                NODE,
                used,
                Resources {
                    milli_cpu: 500,
                    memory: GIB
                }
            )
            .is_ok()
        );
        assert_eq!(
            fits(
                NODE,
                used,
                Resources {
                    milli_cpu: 600,
                    memory: 4 * GIB
                }
            )
            .unwrap_err(),
            vec!["Insufficient cpu", "Insufficient memory"]
        );
    }

    #[test]
    fn the_emptier_node_scores_higher() {
        let pod = Resources {
            milli_cpu: 100,
            memory: GIB / 4,
        };
        let empty = least_allocated_score(NODE, Resources::default(), pod);
        let busy = least_allocated_score(
            NODE,
            Resources {
                milli_cpu: 1000,
                memory: 2 * GIB,
            },
            pod,
        );
        assert!(empty > busy, "{empty} <= {busy}");
        assert_eq!(least_allocated_score(NODE, NODE, Resources::default()), 0);
    }

    #[test]
    fn balanced_use_scores_higher_than_lopsided_use() {
        let pod = Resources {
            milli_cpu: 1000,
            memory: 2 * GIB,
        };
        let lopsided = Resources {
            milli_cpu: 1000,
            memory: 2 * GIB,
        };
        assert_eq!(
            balanced_allocation_score(NODE, Resources::default(), pod),
            100
        );
        assert!(
            balanced_allocation_score(
                NODE,
                Resources::default(),
                Resources {
                    milli_cpu: 1900,
                    memory: 0
                }
            ) < 10
        );
        assert_eq!(
            balanced_allocation_score(NODE, lopsided, Resources::default()),
            100
        );
    }
}
