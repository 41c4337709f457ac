//! `ironbucket-cli cluster layout`: the placement layout with each node's share of the replicas
//! (`show`), and what a proposed change would move before it is made (`plan`).

use crate::{error_of, request};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use ironbucket_api as api;

#[derive(Subcommand, Debug)]
pub(crate) enum LayoutCommand {
    /// The layout in force: each node's zone, weight and share of the replicas.
    Show {
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What a change would do, without making it: shares before and after, the keys that
    /// change hands and the data to copy.
    Plan {
        /// A new weight: NODE=WEIGHT (repeatable).
        #[arg(long = "weight", value_name = "NODE=WEIGHT")]
        weights: Vec<String>,
        /// A node to take out (repeatable).
        #[arg(long, value_name = "NODE")]
        drain: Vec<String>,
        /// A node to add: NAME[:WEIGHT[:ZONE]] (repeatable).
        #[arg(long, value_name = "NAME[:WEIGHT[:ZONE]]")]
        add: Vec<String>,
        /// A new replication factor.
        #[arg(long)]
        factor: Option<usize>,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn print_view(title: &str, v: &api::LayoutView) {
    outln!(
        "{title}: layout version {}, {} with {} replica(s){}",
        v.version,
        v.strategy,
        v.factor,
        if v.moving_from.is_empty() {
            String::new()
        } else {
            format!(", data still moving from {:?}", v.moving_from)
        }
    );
    outln!("{:<20} {:<12} {:>7} {:>8}", "NODE", "ZONE", "WEIGHT", "SHARE");
    for n in &v.nodes {
        outln!(
            "{:<20} {:<12} {:>7} {:>7.1}%",
            n.name,
            if n.zone.is_empty() { "-" } else { &n.zone },
            n.weight,
            n.share * 100.0
        );
    }
}

fn plan_request(
    weights: Vec<String>,
    drain: Vec<String>,
    add: Vec<String>,
    factor: Option<usize>,
) -> Result<api::LayoutPlanRequest> {
    let mut req = api::LayoutPlanRequest {
        drain,
        factor,
        ..Default::default()
    };
    for w in weights {
        let Some((node, weight)) = w.split_once('=') else {
            bail!("--weight takes NODE=WEIGHT, not {w:?}");
        };
        let weight: u32 = weight
            .parse()
            .with_context(|| format!("--weight {w:?}: the weight is not a number"))?;
        req.weights.insert(node.to_string(), weight);
    }
    for a in add {
        let mut parts = a.splitn(3, ':');
        let name = parts.next().unwrap_or_default().to_string();
        let weight = match parts.next() {
            Some(w) if !w.is_empty() => w
                .parse()
                .with_context(|| format!("--add {a:?}: the weight is not a number"))?,
            _ => 100,
        };
        let zone = parts.next().unwrap_or_default().to_string();
        req.add.push(api::NodeShare {
            name,
            zone,
            weight,
            share: 0.0,
        });
    }
    Ok(req)
}

pub(crate) async fn run(cmd: LayoutCommand, base: &str, token: &str, timeout: u64) -> Result<i32> {
    let (json, answer) = match cmd {
        LayoutCommand::Show { json } => (
            json,
            request(base, "GET", "/cluster/layout", Some(token), None, timeout).await?,
        ),
        LayoutCommand::Plan {
            weights,
            drain,
            add,
            factor,
            json,
        } => {
            let body = serde_json::to_value(plan_request(weights, drain, add, factor)?)?;
            (
                json,
                request(base, "POST", "/cluster/layout/plan", Some(token), Some(body), timeout).await?,
            )
        }
    };
    let (status, body) = answer;
    if status != 200 {
        eprintln!("ironbucket-cli: the node answered HTTP {status}: {}", error_of(&body));
        return Ok(1);
    }
    if json {
        outln!("{body}");
        return Ok(0);
    }
    if let Ok(plan) = serde_json::from_str::<api::LayoutPlan>(&body) {
        print_view("now", &plan.current);
        outln!();
        print_view("proposed", &plan.proposed);
        outln!();
        outln!(
            "{:.1}% of the keys would change replicas: {:.3} new copies per key, about {} objects ({:.1} MB) to copy",
            plan.keys_changing * 100.0,
            plan.copies_per_key,
            plan.objects_to_copy,
            plan.bytes_to_copy as f64 / 1e6
        );
        return Ok(0);
    }
    let v: api::LayoutView =
        serde_json::from_str(&body).with_context(|| format!("unexpected /cluster/layout answer: {body}"))?;
    print_view("now", &v);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_arguments_are_parsed_or_refused() {
        let r = plan_request(
            vec!["node-1=300".into()],
            vec!["node-3".into()],
            vec!["node-9:200:z2".into(), "node-8".into()],
            Some(3),
        )
        .unwrap();
        assert_eq!(r.weights["node-1"], 300);
        assert_eq!((r.add[0].weight, r.add[0].zone.as_str()), (200, "z2"));
        assert_eq!((r.add[1].weight, r.add[1].zone.as_str()), (100, ""));
        assert!(plan_request(vec!["node-1".into()], vec![], vec![], None).is_err());
        assert!(plan_request(vec!["node-1=x".into()], vec![], vec![], None).is_err());
        assert!(plan_request(vec![], vec![], vec!["n:heavy".into()], None).is_err());
    }
}
