//! The partition directory: which input partitions this instance holds,
//! whether each is restored (readiness), their shared state for lookups, and
//! who owns every partition of the group (from the membership topic).
//!
//! The pipeline registers and removes partitions, the group thread marks the
//! group joined, the membership reader replaces the owners; HTTP and lookups
//! read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::ownership::PartitionOwners;
use crate::partition::PartitionData;

struct SharedPartition {
    data: Arc<RwLock<PartitionData>>,
    live: bool,
}

/// Assigned partitions, readiness and ownership.
#[derive(Default)]
pub struct PartitionDirectory {
    partitions: RwLock<BTreeMap<i32, SharedPartition>>,
    joined: AtomicBool,
    /// Who owns each input partition, from the membership topic (empty
    /// without one); replaced whole by the group thread.
    owners: RwLock<Arc<PartitionOwners>>,
}

impl PartitionDirectory {
    /// A directory with no partitions, not joined.
    pub fn new() -> Arc<Self> {
        Arc::new(PartitionDirectory::default())
    }

    /// Ready: joined the group and every assigned partition is restored.
    pub fn is_ready(&self) -> bool {
        self.joined.load(Ordering::Acquire)
            && self
                .partitions
                .read()
                .is_ok_and(|m| m.values().all(|p| p.live))
    }

    /// Whether the group was joined (a first assignment received).
    pub fn is_joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }

    /// Assigned partitions and whether each is live.
    pub fn partition_status(&self) -> Vec<(i32, bool)> {
        self.partitions
            .read()
            .map(|m| m.iter().map(|(p, s)| (*p, s.live)).collect())
            .unwrap_or_default()
    }

    /// Who owns each input partition, as the membership topic says (empty
    /// without `topics.membership`, or before its first record is read).
    pub fn partition_owners(&self) -> Arc<PartitionOwners> {
        self.owners
            .read()
            .map(|o| Arc::clone(&o))
            .unwrap_or_default()
    }

    pub(crate) fn set_partition_owners(&self, owners: PartitionOwners) {
        if let Ok(mut o) = self.owners.write() {
            *o = Arc::new(owners);
        }
    }

    pub(crate) fn partition_count(&self) -> usize {
        self.partitions.read().map_or(0, |m| m.len())
    }

    pub(crate) fn customer_count(&self) -> usize {
        self.partitions.read().map_or(0, |m| {
            m.values()
                .filter_map(|p| p.data.read().ok().map(|d| d.store.len()))
                .sum()
        })
    }

    pub(crate) fn set_joined(&self) {
        self.joined.store(true, Ordering::Release);
    }

    pub(crate) fn insert_partition(&self, p: i32, data: Arc<RwLock<PartitionData>>, live: bool) {
        if let Ok(mut m) = self.partitions.write() {
            m.insert(p, SharedPartition { data, live });
        }
    }

    pub(crate) fn set_partition_live(&self, p: i32) {
        if let Ok(mut m) = self.partitions.write()
            && let Some(s) = m.get_mut(&p)
        {
            s.live = true;
        }
    }

    pub(crate) fn remove_partition(&self, p: i32) {
        if let Ok(mut m) = self.partitions.write() {
            m.remove(&p);
        }
    }

    /// The first `Some` that `f` returns over the assigned partitions' data,
    /// in partition order (each read-locked while `f` looks at it; one that
    /// cannot be locked is skipped).
    pub(crate) fn find_map<T>(
        &self,
        mut f: impl FnMut(i32, &PartitionData) -> Option<T>,
    ) -> Option<T> {
        let partitions = self.partitions.read().ok()?;
        for (&p, shared) in partitions.iter() {
            let Ok(data) = shared.data.read() else {
                continue;
            };
            if let Some(found) = f(p, &data) {
                return Some(found);
            }
        }
        None
    }
}
