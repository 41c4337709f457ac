//! `/cluster/layout`: the placement layout in force with each node's share of the replicas, and
//! the plan of a proposed change (weights, drains, new nodes, replication factor): how many keys
//! would change hands and about how much data would be copied, before anything is applied.
//! Both need the admin token.

use crate::{ApiError, ApiResult, JsonBody, Shared, ok};
use axum::extract::State;
use ironbucket_api::{LayoutPlan, LayoutPlanRequest, LayoutView, NodeShare};
use ironbucket_cluster::share::{change, holdings};
use ironbucket_cluster::{Layout, NodeSpec, Ring};
use ironbucket_consensus::MAX_WEIGHT;

fn control(s: &Shared) -> Result<std::sync::Arc<ironbucket_consensus::ControlPlane>, ApiError> {
    s.cluster
        .get()
        .cloned()
        .ok_or_else(|| ApiError::not_found("this node is not part of a cluster (CLUSTER_ENABLED=false)"))
}

fn ring(layout: &Layout) -> Result<Ring, ApiError> {
    Ring::new(layout.clone()).map_err(|e| ApiError::bad_request(format!("the layout cannot place data: {e}")))
}

fn view(layout: &Layout, ring: &Ring, moving_from: Vec<u64>) -> LayoutView {
    let shares = holdings(ring);
    let mut nodes: Vec<NodeShare> = layout
        .nodes
        .iter()
        .map(|n| NodeShare {
            name: n.name.clone(),
            zone: n.zone.clone(),
            weight: n.weight,
            share: shares.get(&n.name).copied().unwrap_or(0.0),
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    LayoutView {
        version: layout.version,
        strategy: layout.strategy.to_string(),
        factor: ring.factor(),
        moving_from,
        nodes,
    }
}

/// `GET /cluster/layout`.
pub(crate) async fn show(State(s): State<Shared>) -> ApiResult {
    let cp = control(&s)?;
    let (layout, moving) = cp.with_state(|st| {
        (
            st.placement(),
            st.layout_history.iter().map(|l| l.version).collect::<Vec<_>>(),
        )
    });
    let r = ring(&layout)?;
    ok(&view(&layout, &r, moving))
}

/// The layout `current` would become with `p`, or why it cannot.
fn proposed(current: &Layout, p: &LayoutPlanRequest) -> Result<Layout, ApiError> {
    let mut next = current.clone();
    next.version += 1;
    let weight_ok = |w: u32| {
        if (1..=MAX_WEIGHT).contains(&w) {
            Ok(w)
        } else {
            Err(ApiError::bad_request(format!(
                "weight must be between 1 and {MAX_WEIGHT}, not {w}"
            )))
        }
    };
    for (name, w) in &p.weights {
        let n = next
            .nodes
            .iter_mut()
            .find(|n| n.name == *name)
            .ok_or_else(|| ApiError::bad_request(format!("no node named {name} holds data in the layout")))?;
        n.weight = weight_ok(*w)?;
    }
    for name in &p.drain {
        let before = next.nodes.len();
        next.nodes.retain(|n| n.name != *name);
        if next.nodes.len() == before {
            return Err(ApiError::bad_request(format!(
                "no node named {name} holds data in the layout"
            )));
        }
    }
    for a in &p.add {
        if a.name.is_empty() || next.nodes.iter().any(|n| n.name == a.name) {
            return Err(ApiError::bad_request(format!(
                "a node to add needs a name not in the layout, not {:?}",
                a.name
            )));
        }
        next.nodes.push(NodeSpec {
            name: a.name.clone(),
            zone: a.zone.clone(),
            rack: String::new(),
            weight: weight_ok(if a.weight == 0 { 100 } else { a.weight })?,
        });
    }
    if let Some(f) = p.factor {
        next.factor = f;
    }
    if next.factor == 0 || next.factor > next.nodes.len() {
        return Err(ApiError::bad_request(format!(
            "replication factor {} is not possible with {} node(s) holding data",
            next.factor,
            next.nodes.len()
        )));
    }
    Ok(next)
}

/// `POST /cluster/layout/plan`.
pub(crate) async fn plan(State(s): State<Shared>, JsonBody(p): JsonBody<LayoutPlanRequest>) -> ApiResult {
    let cp = control(&s)?;
    let (current, moving) = cp.with_state(|st| {
        (
            st.placement(),
            st.layout_history.iter().map(|l| l.version).collect::<Vec<_>>(),
        )
    });
    let next = proposed(&current, &p)?;
    let (a, b) = (ring(&current)?, ring(&next)?);
    let c = change(&a, &b);
    // Objects stored once: the replicas the nodes report, over the factor.
    let (mut objects, mut bytes) = (0u64, 0u64);
    if let Some(g) = s.gossip.get() {
        for n in g.view().values() {
            if let Some(l) = &n.load {
                objects += l.figures.objects;
                bytes += l.figures.bytes;
            }
        }
    }
    let factor = a.factor().max(1) as f64;
    ok(&LayoutPlan {
        current: view(&current, &a, moving),
        proposed: view(&next, &b, Vec::new()),
        keys_changing: c.keys_changing,
        copies_per_key: c.copies_per_key,
        objects_to_copy: (objects as f64 / factor * c.copies_per_key).round() as u64,
        bytes_to_copy: (bytes as f64 / factor * c.copies_per_key).round() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironbucket_cluster::Strategy;

    fn layout() -> Layout {
        Layout {
            version: 4,
            nodes: ["a", "b", "c"].iter().map(|n| NodeSpec::new(*n)).collect(),
            strategy: Strategy::ConsistentHash,
            factor: 2,
            vnodes: 64,
        }
    }

    #[test]
    fn plans_apply_the_changes_or_say_why_not() {
        let p = LayoutPlanRequest {
            weights: [("a".to_string(), 300)].into(),
            drain: vec!["c".into()],
            add: vec![NodeShare {
                name: "d".into(),
                zone: "z2".into(),
                weight: 0,
                share: 0.0,
            }],
            factor: None,
        };
        let n = proposed(&layout(), &p).unwrap();
        let names: Vec<&str> = n.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "d"]);
        assert_eq!((n.nodes[0].weight, n.nodes[2].weight, n.version), (300, 100, 5));
        for bad in [
            LayoutPlanRequest {
                drain: vec!["x".into()],
                ..Default::default()
            },
            LayoutPlanRequest {
                weights: [("a".to_string(), 0)].into(),
                ..Default::default()
            },
            LayoutPlanRequest {
                factor: Some(4),
                ..Default::default()
            },
            LayoutPlanRequest {
                add: vec![NodeShare {
                    name: "a".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ] {
            assert!(proposed(&layout(), &bad).is_err(), "{bad:?}");
        }
    }
}
