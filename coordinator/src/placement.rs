//! Shard placement: which live nodes get the replicas of each shard of a new index.

use quiver_proto::HashRange;

use crate::catalog::{CatalogState, NewShard};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Replicas of one shard must be on distinct nodes, so a shard needs as many live nodes.
    #[error(
        "{replicas} replicas of a shard need {replicas} distinct live storage nodes, {live} are up"
    )]
    NotEnoughNodes { replicas: usize, live: usize },
}

/// Picks the nodes of each of `shard_count` new shards: `replicas` distinct live nodes per shard
/// (at least one), each time those with the fewest shard replicas so far (ties by node id), so
/// replica counts stay balanced across nodes.
pub fn place(
    state: &CatalogState,
    shard_count: u32,
    replicas: usize,
) -> Result<Vec<Vec<String>>, PlacementError> {
    let replicas = replicas.max(1);
    let counts = state.shard_counts();
    let mut live: Vec<(usize, String)> = state
        .nodes()
        .filter(|node| node.up)
        .map(|node| (counts.get(&node.id).copied().unwrap_or(0), node.id.clone()))
        .collect();
    if live.len() < replicas {
        return Err(PlacementError::NotEnoughNodes {
            replicas,
            live: live.len(),
        });
    }
    let mut placed = Vec::with_capacity(shard_count as usize);
    for shard in 0..shard_count as usize {
        live.sort();
        let mut nodes: Vec<String> = live
            .iter_mut()
            .take(replicas)
            .map(|(count, node)| {
                *count += 1;
                node.clone()
            })
            .collect();
        // The first replica gets the smallest id and starts the shard's group, so it leads
        // first: rotate, so the index's leaders (and their work) spread over the nodes.
        nodes.rotate_left(shard % replicas);
        placed.push(nodes);
    }
    Ok(placed)
}

/// The shard map of a new index: `shard_count` equal hash ranges ([`HashRange::split`]), each
/// with `replicas` replicas placed by [`place`].
pub fn new_shards(
    state: &CatalogState,
    shard_count: u32,
    replicas: usize,
) -> Result<Vec<NewShard>, PlacementError> {
    let nodes = place(state, shard_count, replicas)?;
    Ok((0..shard_count)
        .zip(nodes)
        .map(|(shard, nodes)| NewShard {
            range: HashRange::split(shard, shard_count),
            nodes,
        })
        .collect())
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
                    incarnation: 7,
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

    fn count(placed: &[Vec<String>], node: &str) -> usize {
        placed.iter().flatten().filter(|n| *n == node).count()
    }

    #[test]
    fn twelve_shards_land_four_per_node() {
        let state = state_with(&[("node-1", true), ("node-2", true), ("node-3", true)]);
        let placed = place(&state, 12, 1).expect("placed");
        assert!(placed.iter().all(|nodes| nodes.len() == 1));
        for node in ["node-1", "node-2", "node-3"] {
            assert_eq!(count(&placed, node), 4, "{placed:?}");
        }
    }

    #[test]
    fn down_nodes_get_nothing_and_no_live_node_is_an_error() {
        let state = state_with(&[("node-1", true), ("node-2", false), ("node-3", true)]);
        let placed = place(&state, 4, 1).expect("placed");
        assert_eq!(count(&placed, "node-2"), 0);
        assert_eq!(count(&placed, "node-1"), 2);
        let state = state_with(&[("node-1", false)]);
        assert_eq!(
            place(&state, 2, 1),
            Err(PlacementError::NotEnoughNodes {
                replicas: 1,
                live: 0
            })
        );
    }

    #[test]
    fn three_replicas_go_to_three_distinct_live_nodes() {
        let state = state_with(&[
            ("node-1", true),
            ("node-2", true),
            ("node-3", false),
            ("node-4", true),
            ("node-5", true),
        ]);
        let placed = place(&state, 8, 3).expect("placed");
        for nodes in &placed {
            assert_eq!(nodes.len(), 3, "{placed:?}");
            let distinct: std::collections::BTreeSet<_> = nodes.iter().collect();
            assert_eq!(distinct.len(), 3, "replicas on one node: {nodes:?}");
        }
        // 24 replicas over the 4 live nodes, balanced.
        assert_eq!(count(&placed, "node-3"), 0);
        for node in ["node-1", "node-2", "node-4", "node-5"] {
            assert_eq!(count(&placed, node), 6, "{placed:?}");
        }
    }

    #[test]
    fn first_replicas_which_lead_new_groups_spread_over_the_nodes() {
        let state = state_with(&[("node-1", true), ("node-2", true), ("node-3", true)]);
        let placed = place(&state, 12, 3).expect("placed");
        let firsts: Vec<&str> = placed.iter().map(|nodes| nodes[0].as_str()).collect();
        for node in ["node-1", "node-2", "node-3"] {
            assert_eq!(
                firsts.iter().filter(|first| **first == node).count(),
                4,
                "{firsts:?}"
            );
        }
    }

    #[test]
    fn three_replicas_with_two_live_nodes_is_a_clear_error() {
        let state = state_with(&[("node-1", true), ("node-2", true), ("node-3", false)]);
        let error = place(&state, 2, 3).expect_err("two live nodes cannot hold three replicas");
        assert_eq!(
            error,
            PlacementError::NotEnoughNodes {
                replicas: 3,
                live: 2
            }
        );
        assert_eq!(
            error.to_string(),
            "3 replicas of a shard need 3 distinct live storage nodes, 2 are up"
        );
    }

    #[test]
    fn a_new_shard_map_splits_the_hash_space_evenly() {
        let state = state_with(&[("node-1", true), ("node-2", true)]);
        let shards = new_shards(&state, 3, 2).expect("shards");
        let ranges: Vec<HashRange> = shards.iter().map(|shard| shard.range).collect();
        assert!(HashRange::is_partition(&ranges));
        assert_eq!(ranges[1], HashRange::split(1, 3));
        assert!(shards.iter().all(|shard| shard.nodes.len() == 2));
    }
}
