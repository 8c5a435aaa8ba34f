//! Shard placement: which live node gets each shard of a new index.

use crate::catalog::CatalogState;

/// Picks a node for each of `shard_count` new shards: every shard goes to the live node with
/// the fewest shards so far (ties by node id), so shard counts stay balanced across nodes.
/// `None` when no node is up.
pub fn place(state: &CatalogState, shard_count: u32) -> Option<Vec<String>> {
    let counts = state.shard_counts();
    let mut live: Vec<(usize, String)> = state
        .nodes()
        .filter(|node| node.up)
        .map(|node| (counts.get(&node.id).copied().unwrap_or(0), node.id.clone()))
        .collect();
    if live.is_empty() {
        return None;
    }
    let mut placed = Vec::with_capacity(shard_count as usize);
    for _ in 0..shard_count {
        let least = live.iter_mut().min()?;
        placed.push(least.1.clone());
        least.0 += 1;
    }
    Some(placed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogCommand;

    fn state_with(nodes: &[(&str, bool)]) -> CatalogState {
        let mut state = CatalogState::default();
        for (id, up) in nodes {
            for command in [
                CatalogCommand::RegisterNode {
                    id: (*id).into(),
                    addr: "127.0.0.1:1".into(),
                },
                CatalogCommand::SetNodeUp {
                    id: (*id).into(),
                    up: *up,
                },
            ] {
                let rows = state.plan(command).expect("plan");
                state.apply_rows(rows);
            }
        }
        state
    }

    fn count(placed: &[String], node: &str) -> usize {
        placed.iter().filter(|n| *n == node).count()
    }

    #[test]
    fn twelve_shards_land_four_per_node() {
        let state = state_with(&[("node-1", true), ("node-2", true), ("node-3", true)]);
        let placed = place(&state, 12).expect("placed");
        for node in ["node-1", "node-2", "node-3"] {
            assert_eq!(count(&placed, node), 4, "{placed:?}");
        }
    }

    #[test]
    fn down_nodes_get_nothing_and_no_live_node_means_none() {
        let state = state_with(&[("node-1", true), ("node-2", false), ("node-3", true)]);
        let placed = place(&state, 4).expect("placed");
        assert_eq!(count(&placed, "node-2"), 0);
        assert_eq!(count(&placed, "node-1"), 2);
        let state = state_with(&[("node-1", false)]);
        assert!(place(&state, 2).is_none());
    }
}
