//! Cohort groups: ties resolved by segment order, the distinct (segment, cohort) pairs, and every
//! user sealed into its group.

use hashbrown::HashMap;
use rayon::prelude::*;

use super::exec::{watched, StopCheck};
use super::Runner;
use crate::columns::TsKind;
use crate::error::{out_of_memory, Result};
use crate::kernel::Users;

/// A few recent lookups of a (segment, cohort) pair, direct-mapped: users come in hash order but
/// share few distinct groups, so nearly every lookup is a repeat and skips the hash map.
pub(crate) struct GroupMemo {
    slots: [Option<((u32, i32), u32)>; 64],
}

impl GroupMemo {
    pub(crate) fn new() -> Self {
        GroupMemo { slots: [None; 64] }
    }

    #[inline]
    pub(crate) fn get_or(&mut self, key: (u32, i32), miss: impl FnOnce() -> u32) -> u32 {
        let slot = &mut self.slots[(key.0 as usize).wrapping_mul(31).wrapping_add(key.1 as usize) & 63];
        match *slot {
            Some((k, v)) if k == key => v,
            _ => {
                let v = miss();
                *slot = Some((key, v));
                v
            }
        }
    }
}

/// Groups: the distinct (segment, cohort) pairs, sorted; seals every shard's users.
pub(crate) fn seal_groups(runner: &mut Runner<'_>, kinds: usize) -> Result<Vec<(u32, i32)>> {
    let cal = &runner.cal;
    let kind = runner.ts_kind.unwrap_or(TsKind::Date32);
    let band = kind.band();
    type GroupSet = hashbrown::HashSet<(u32, i32), foldhash::fast::FixedState>;
    let shards = &mut runner.shards;
    let distinct: GroupSet = watched(&runner.pool, runner.hooks, "cohorts", |stop| {
        shards
            .par_iter_mut()
            .map(|users| {
                let mut set = GroupSet::default();
                let mut memo = GroupMemo::new();
                let mut stop = StopCheck::new(stop);
                users.map_firsts(|ts, segment| {
                    stop.check();
                    let period = kind.period(band, ts, cal);
                    let g = (segment, period);
                    memo.get_or(g, || {
                        set.insert(g);
                        0
                    });
                    i64::from(period)
                });
                set
            })
            .reduce(GroupSet::default, |mut a, b| {
                a.extend(b);
                a
            })
    })?;
    let mut groups: Vec<(u32, i32)> = distinct.into_iter().collect();
    groups.sort_unstable();
    let n_groups = u32::try_from(groups.len()).map_err(|_| out_of_memory(usize::MAX, "more than 2^32 cohort groups"))?;
    let index: HashMap<(u32, i32), u32, foldhash::fast::FixedState> = groups.iter().zip(0..n_groups).map(|(&g, i)| (g, i)).collect();
    let horizon = runner.spec.horizon as usize;
    let shards = &mut runner.shards;
    watched(&runner.pool, runner.hooks, "cohorts", |stop| {
        shards.par_iter_mut().for_each(|users| {
            let mut memo = GroupMemo::new();
            let mut stop = StopCheck::new(stop);
            users.seal(
                |period, segment| {
                    stop.check();
                    // `map_firsts` above stored the period, an i32, in the i64.
                    #[allow(clippy::cast_possible_truncation)]
                    let g = (segment, period as i32);
                    memo.get_or(g, || index[&g])
                },
                groups.len(),
                horizon,
                kinds,
            );
        })
    })?;
    Ok(groups)
}

/// A user whose earliest rows tie on the timestamp takes the smallest of their segments (see
/// `Inputs::segment_ranks`). The ranks are asked for only when some user has such a tie.
pub(crate) fn resolve_ties(runner: &mut Runner<'_>, segment_ranks: Option<&mut dyn FnMut() -> Result<Vec<u32>>>) -> Result<()> {
    if !runner.shards.iter().any(Users::has_ties) {
        return Ok(());
    }
    let ranks = match segment_ranks {
        Some(ranks) => Some(ranks()?),
        None => None,
    };
    let rank = |code: u32| ranks.as_ref().map_or(code, |r| r.get(code as usize).copied().unwrap_or(u32::MAX));
    runner.shards.iter_mut().for_each(|users| users.resolve_ties(rank));
    Ok(())
}
