//! Planning: read every resource, compare with the stack, and decide one action each.
//!
//! The plan is not a preview computed separately from apply: apply executes exactly the
//! [`Plan`] returned here, with the live state it read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde::Serialize;
use stacks::Ensure;

use super::{Change, Ctx, Node, Ownership};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
    NoOp,
    /// Our name, not our tags: reported, never touched.
    Conflict,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::NoOp => " ",
            Action::Conflict => "!",
        }
    }

    pub fn writes(self) -> bool {
        matches!(
            self,
            Action::Create | Action::Update | Action::Replace | Action::Delete
        )
    }
}

/// The decision for one resource.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub id: String,
    pub kind: &'static str,
    pub name: String,
    pub action: Action,
    pub changes: Vec<Change>,
    /// Facts worth seeing before confirming (object versions to purge, why a conflict).
    pub details: Vec<String>,
    /// Set when apply must refuse this action unless the user allows it explicitly.
    pub blocked: Option<String>,
    #[serde(skip)]
    pub depends_on: Vec<String>,
}

/// What apply (or destroy) will do, in dependency order.
#[derive(Serialize)]
pub struct Plan {
    pub env: String,
    pub account_id: String,
    pub region: String,
    pub resources: Vec<Planned>,
    #[serde(skip)]
    pub nodes: Vec<Arc<dyn Node>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub no_op: usize,
    pub conflict: usize,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for r in &self.resources {
            match r.action {
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.delete += 1,
                Action::NoOp => s.no_op += 1,
                Action::Conflict => s.conflict += 1,
            }
        }
        s
    }

    pub fn has_changes(&self) -> bool {
        self.resources.iter().any(|r| r.action.writes())
    }

    pub fn conflicts(&self) -> impl Iterator<Item = &Planned> {
        self.resources
            .iter()
            .filter(|r| r.action == Action::Conflict)
    }

    pub fn blocked(&self) -> impl Iterator<Item = &Planned> {
        self.resources.iter().filter(|r| r.blocked.is_some())
    }
}

/// Orders nodes so every node comes after its dependencies.
pub fn topo_order(nodes: &[Arc<dyn Node>]) -> Result<Vec<usize>> {
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id(), i)).collect();
    let mut state = vec![0u8; nodes.len()]; // 0 new, 1 visiting, 2 done
    let mut order = Vec::with_capacity(nodes.len());
    fn visit(
        i: usize,
        nodes: &[Arc<dyn Node>],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        order: &mut Vec<usize>,
    ) -> Result<()> {
        match state[i] {
            2 => return Ok(()),
            1 => bail!("dependency cycle through {}", nodes[i].id()),
            _ => {}
        }
        state[i] = 1;
        for d in nodes[i].depends_on() {
            let j = *index
                .get(d.as_str())
                .with_context(|| format!("{} depends on unknown resource {d}", nodes[i].id()))?;
            visit(j, nodes, index, state, order)?;
        }
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..nodes.len() {
        visit(i, nodes, &index, &mut state, &mut order)?;
    }
    Ok(order)
}

/// How many more resources may be read at once than written: reads change nothing, and a
/// plan is as deep as its slowest read only if every read can start at once (the invoice
/// app's 42 resources with the default concurrency of 8).
const READ_FANOUT: usize = 8;

/// Reads every node (concurrently, at most `READ_FANOUT * concurrency` at once) and decides
/// its action.
pub async fn plan(
    ctx: &Ctx,
    env: &str,
    nodes: Vec<Arc<dyn Node>>,
    owner_tags: &BTreeMap<String, String>,
    concurrency: usize,
) -> Result<Plan> {
    decide(ctx, env, nodes, owner_tags, concurrency, None, None).await
}

/// [`plan`], telling `changes` as soon as one read makes a change certain (a create, an update
/// or a deletion of what is ours): `apply --yes` takes the lock then, beside the rest of the
/// plan, instead of after it. A plan without changes never tells it, so a no-op apply still
/// writes nothing.
pub async fn plan_noting(
    ctx: &Ctx,
    env: &str,
    nodes: Vec<Arc<dyn Node>>,
    owner_tags: &BTreeMap<String, String>,
    concurrency: usize,
    changes: &tokio::sync::Notify,
) -> Result<Plan> {
    decide(
        ctx,
        env,
        nodes,
        owner_tags,
        concurrency,
        None,
        Some(changes),
    )
    .await
}

/// Whether a node read as `o` is certain to be written, whatever its dependencies turn out to
/// be (they can only add changes: a replacement cascades). A replacement is not: apply refuses
/// one of a resource that holds data without `--allow-data-loss`, which is known only once the
/// plan is whole, and a refused apply should not have taken the lock.
fn certainly_changes(ensure: Ensure, o: &super::Observation) -> bool {
    match ensure {
        Ensure::Present => {
            !o.exists
                || (o.ownership == Ownership::Ours
                    && !o.changes.is_empty()
                    && !o.changes.iter().any(|c| c.forces_replacement))
        }
        Ensure::Absent => o.exists && o.ownership == Ownership::Ours,
    }
}

/// The plan again, reading only what `shown` acts on: apply calls it under the lock, to act on
/// what is live now rather than on what was live when the plan was shown.
///
/// A resource `shown` leaves alone keeps its observation: re-reading all of them would make a
/// one-function change cost a second whole plan. The lock keeps other runs of this tool from
/// writing while it is held, so what the re-read can catch is a run that finished between the
/// plan and the lock; if it changed a resource this plan acts on, the actions differ and apply
/// stops. A change it made to anything else is left for the next plan to show, as is any
/// change made outside this tool (which no lock keeps out).
pub async fn replan(
    ctx: &Ctx,
    env: &str,
    nodes: Vec<Arc<dyn Node>>,
    owner_tags: &BTreeMap<String, String>,
    concurrency: usize,
    shown: &Plan,
) -> Result<Plan> {
    decide(ctx, env, nodes, owner_tags, concurrency, Some(shown), None).await
}

/// What `shown` decided about `id` when that needs no second read: left alone, created by a
/// create that converges whatever another run made meanwhile ([`super::Provider::CREATE_CONVERGES`]),
/// or updated by writes that AWS refuses if the resource changed since it was read
/// ([`super::Provider::update_guarded`]).
/// The node it read (with its live state) and an observation that decides the same again;
/// `None`: read it again.
fn kept(shown: &Plan, node: &Arc<dyn Node>) -> Option<(Arc<dyn Node>, super::Observation)> {
    let id = node.id();
    let Some(planned) = shown.resources.iter().find(|r| r.id == id) else {
        // Not in the plan at all: unwanted and already gone.
        return (node.ensure() == Ensure::Absent).then(|| {
            let gone = super::Observation {
                exists: false,
                ownership: Ownership::Ours,
                changes: Vec::new(),
            };
            (node.clone(), gone)
        });
    };
    let read = shown.nodes.iter().find(|n| n.id() == id)?.clone();
    let (exists, ownership, changes) = match planned.action {
        Action::NoOp => (true, Ownership::Ours, Vec::new()),
        Action::Conflict => (true, Ownership::Foreign, Vec::new()),
        Action::Create if node.create_converges() => {
            (false, Ownership::Ours, planned.changes.clone())
        }
        Action::Update if read.update_guarded(&planned.changes) => {
            (true, Ownership::Ours, planned.changes.clone())
        }
        _ => return None,
    };
    Some((
        read,
        super::Observation {
            exists,
            ownership,
            changes,
        },
    ))
}

async fn decide(
    ctx: &Ctx,
    env: &str,
    nodes: Vec<Arc<dyn Node>>,
    owner_tags: &BTreeMap<String, String>,
    concurrency: usize,
    shown: Option<&Plan>,
    changes: Option<&tokio::sync::Notify>,
) -> Result<Plan> {
    let order = topo_order(&nodes)?;
    let nodes: Vec<Arc<dyn Node>> = order.into_iter().map(|i| nodes[i].clone()).collect();
    let stage = crate::aws::next_stage();
    // The names this pass reads, by kind, for providers that describe several at once.
    super::lookup::set_peers(
        stage,
        nodes
            .iter()
            .filter(|n| shown.and_then(|p| kept(p, n)).is_none())
            .map(|n| (n.kind(), n.name())),
    );
    let read = read_all(ctx, stage, nodes, owner_tags, concurrency, shown, changes).await?;
    let (mut resources, nodes, early) = classify(read);
    inspect(ctx, stage, &mut resources, early).await?;
    super::lookup::forget(stage);
    Ok(Plan {
        env: env.to_string(),
        account_id: ctx.account_id.clone(),
        region: ctx.region.clone(),
        resources,
        nodes,
    })
}

/// One node as read: its observation and, for a node that is to go, what deleting it would
/// purge (asked right after the read rather than after every read: a destroy's plan is then
/// as deep as its slowest resource, not the slowest read plus the slowest inspection).
struct Read {
    node: Arc<dyn Node>,
    observation: super::Observation,
    deletion_details: Option<Vec<String>>,
}

fn scope(stage: u64, node: &dyn Node) -> crate::aws::Scope {
    crate::aws::Scope {
        stage,
        kind: "plan",
        node: node.id().to_string(),
    }
}

/// Reads every node not kept from `shown`, at most `READ_FANOUT * concurrency` at once.
async fn read_all(
    ctx: &Ctx,
    stage: u64,
    nodes: Vec<Arc<dyn Node>>,
    owner_tags: &BTreeMap<String, String>,
    concurrency: usize,
    shown: Option<&Plan>,
    changes: Option<&tokio::sync::Notify>,
) -> Result<Vec<Read>> {
    let pass = if shown.is_some() {
        super::Pass::Replan
    } else {
        super::Pass::Plan
    };
    // Deepest reads first (see `Provider::READ_ROUND_TRIPS`); a stable sort keeps dependency
    // order among equals.
    let mut order: Vec<(usize, Arc<dyn Node>)> = nodes.into_iter().enumerate().collect();
    order.sort_by_key(|(_, n)| std::cmp::Reverse(n.read_round_trips()));
    let mut read: Vec<(usize, Read)> = futures::stream::iter(order)
        .map(|(i, n)| async move {
            if let Some((node, observation)) = shown.and_then(|p| kept(p, &n)) {
                let kept = Read {
                    node,
                    observation,
                    deletion_details: None,
                };
                return Ok((i, kept));
            }
            crate::aws::scoped(scope(stage, n.as_ref()), async {
                let observation = n
                    .observe(ctx, owner_tags, pass)
                    .await
                    .with_context(|| format!("reading {} ({})", n.id(), n.name()))?;
                if let Some(changes) = changes
                    && certainly_changes(n.ensure(), &observation)
                {
                    changes.notify_one();
                }
                // A foreign resource is never deleted; an inherited one whose owner turns out
                // foreign is not either, and then this read was merely wasted.
                let goes = n.ensure() == Ensure::Absent
                    && observation.exists
                    && observation.ownership != Ownership::Foreign;
                // What a deletion purges is counted once, for the plan that is shown; under
                // the lock it is taken over from that plan.
                let deletion_details = match shown {
                    Some(shown) if goes => Some(
                        shown
                            .resources
                            .iter()
                            .find(|r| r.id == n.id() && r.action == Action::Delete)
                            .map(|r| r.details.clone())
                            .unwrap_or_default(),
                    ),
                    None if goes => Some(
                        n.deletion_details(ctx)
                            .await
                            .with_context(|| format!("inspecting {} before deletion", n.id()))?,
                    ),
                    _ => None,
                };
                let read = Read {
                    node: n.clone(),
                    observation,
                    deletion_details,
                };
                Ok::<_, anyhow::Error>((i, read))
            })
            .await
        })
        // Unordered: with `buffered`, a finished read behind a slow one kept its slot, and
        // the reads went in waves.
        .buffer_unordered(concurrency.max(1) * READ_FANOUT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    // Classifying needs dependency order back.
    read.sort_by_key(|(i, _)| *i);
    Ok(read.into_iter().map(|(_, r)| r).collect())
}

/// What [`classify`] leaves to [`inspect`]: the index of a planned resource, its node, and
/// the deletion details already read for it.
type ToInspect = Vec<(usize, Arc<dyn Node>, Option<Vec<String>>)>;

/// Decides each node's action from its read, in dependency order (an untaggable resource
/// inherits its owner's ownership, a dependent of a replaced resource is replaced too). Returns
/// the planned resources, their nodes, and what still needs inspecting.
fn classify(read: Vec<Read>) -> (Vec<Planned>, Vec<Arc<dyn Node>>, ToInspect) {
    let mut resources: Vec<Planned> = Vec::with_capacity(read.len());
    let mut nodes = Vec::with_capacity(read.len());
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut to_inspect = Vec::new();
    for Read {
        node,
        observation: obs,
        deletion_details,
    } in read
    {
        let action_of = |d: &String| by_id.get(d).map(|&i: &usize| resources[i].action);
        // Untaggable resources belong to the owner of what they hang off.
        let ownership = match obs.ownership {
            Ownership::Inherited => {
                if node
                    .depends_on()
                    .iter()
                    .any(|d| action_of(d) == Some(Action::Conflict))
                {
                    Ownership::Foreign
                } else {
                    Ownership::Ours
                }
            }
            o => o,
        };
        let replaced_dep = node
            .depends_on()
            .iter()
            .find(|d| action_of(d) == Some(Action::Replace));
        let mut details = Vec::new();
        let (action, changes) = match (node.ensure(), obs.exists, ownership) {
            (_, true, Ownership::Foreign) => {
                details.push(
                    "exists without this stack's ownership tags; it is left alone".to_string(),
                );
                (Action::Conflict, Vec::new())
            }
            (Ensure::Present, false, _) => (Action::Create, obs.changes),
            (Ensure::Present, true, _) => {
                if let Some(dep) = replaced_dep {
                    details.push(format!("replaced because {dep} is replaced"));
                    (Action::Replace, obs.changes)
                } else if obs.changes.is_empty() {
                    (Action::NoOp, Vec::new())
                } else if obs.changes.iter().any(|c| c.forces_replacement) {
                    (Action::Replace, obs.changes)
                } else {
                    (Action::Update, obs.changes)
                }
            }
            (Ensure::Absent, true, _) => (Action::Delete, Vec::new()),
            // Neither wanted nor there: not part of the plan at all.
            (Ensure::Absent, false, _) => continue,
        };
        if matches!(action, Action::Delete | Action::Replace) {
            to_inspect.push((resources.len(), node.clone(), deletion_details));
        }
        by_id.insert(node.id().to_string(), resources.len());
        resources.push(Planned {
            id: node.id().to_string(),
            kind: node.kind(),
            name: node.name().to_string(),
            action,
            changes,
            details,
            blocked: None,
            depends_on: node.depends_on().to_vec(),
        });
        nodes.push(node);
    }
    (resources, nodes, to_inspect)
}

/// What a deletion would purge and whether a replacement loses data: each resource's own
/// question, asked of all of them at once (deletion details read with the node are reused).
async fn inspect(
    ctx: &Ctx,
    stage: u64,
    resources: &mut [Planned],
    to_inspect: ToInspect,
) -> Result<()> {
    let allow_data_loss = ctx.options.allow_data_loss;
    let inspected = futures::future::join_all(to_inspect.into_iter().map(|(i, node, early)| {
        let action = resources[i].action;
        crate::aws::scoped(scope(stage, node.as_ref()), async move {
            let found = match (action, early) {
                (Action::Delete, Some(details)) => (details, false),
                (Action::Delete, None) => {
                    let details = node
                        .deletion_details(ctx)
                        .await
                        .with_context(|| format!("inspecting {} before deletion", node.id()))?;
                    (details, false)
                }
                (_, _) if allow_data_loss => (Vec::new(), false),
                _ => {
                    let holds = node
                        .holds_data(ctx)
                        .await
                        .with_context(|| format!("checking whether {} holds data", node.id()))?;
                    (Vec::new(), holds)
                }
            };
            Ok::<_, anyhow::Error>((i, found))
        })
    }))
    .await;
    for found in inspected {
        let (i, (details, holds_data)) = found?;
        resources[i].details.extend(details);
        if holds_data {
            resources[i].blocked = Some(
                "holds data that replacing it would destroy; pass --allow-data-loss to replace it anyway"
                    .to_string(),
            );
        }
    }
    Ok(())
}
