//! The reconcile engine: read live state, diff it against the stack, plan, apply.
//!
//! The engine knows resource kinds only through the [`Provider`] trait: typed spec vs. typed
//! observed state, a field-level diff, and create/update/delete. `providers::bind` turns each
//! stack resource into a type-erased [`Node`]; everything here works on nodes.

pub mod apply;
pub mod lookup;
pub mod plan;
pub mod render;
pub mod retry;
pub mod tags;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use stacks::Ensure;

use crate::aws::Clients;

/// Everything an operation needs besides its spec.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub aws: Clients,
    pub account_id: String,
    pub region: String,
    /// Upper bound of any single wait for AWS to settle.
    pub wait_timeout: Duration,
    pub options: Options,
}

#[cfg(test)]
impl Ctx {
    /// A context whose clients are never called, for unit tests of what is built around
    /// them (backoffs, the apply loop); `wait_timeout` bounds its waits.
    pub(crate) async fn offline(wait_timeout: Duration) -> Ctx {
        let target = crate::aws::Target::Emulator {
            endpoint: "http://127.0.0.1:9".into(),
            region: "us-east-1".into(),
        };
        Ctx {
            aws: Clients::new(&target, crate::aws::CallLog::new(false)).await,
            account_id: "1".into(),
            region: "us-east-1".into(),
            wait_timeout,
            options: Default::default(),
        }
    }
}

/// Switches that allow otherwise refused operations.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Replace resources that hold data (a table with items, a bucket with objects).
    pub allow_data_loss: bool,
    /// Turn deletion protection off before deleting a protected table.
    pub override_deletion_protection: bool,
}

/// One field that differs between spec and live state. Plans hold it with the field's name
/// (`F = String`, what text and JSON show); providers build it with their typed field set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change<F = String> {
    pub field: F,
    pub old: Value,
    pub new: Value,
    /// This field cannot be updated in place: changing it replaces the resource.
    pub forces_replacement: bool,
}

impl<F: fmt::Display> Change<F> {
    /// The change as plans hold it: the field by its name.
    pub fn named(self) -> Change {
        Change {
            field: self.field.to_string(),
            old: self.old,
            new: self.new,
            forces_replacement: self.forces_replacement,
        }
    }
}

/// A provider's field set: the fields its diff reports and its update acts on, rendered (with
/// `Display`) as the names plans show. Usually a field-less enum, so that an update matches
/// every field and a new one cannot be forgotten.
pub trait Field: fmt::Display + fmt::Debug + Clone + PartialEq + Send + Sync + 'static {}

impl<T: fmt::Display + fmt::Debug + Clone + PartialEq + Send + Sync + 'static> Field for T {}

/// Builds a field-level diff; providers call it once per field they manage.
#[derive(Debug)]
pub struct Diff<F>(pub Vec<Change<F>>);

impl<F> Default for Diff<F> {
    fn default() -> Self {
        Diff(Vec::new())
    }
}

impl<F: Field> Diff<F> {
    /// Records a change when `desired != live`.
    pub fn field<T: Serialize + PartialEq>(&mut self, field: F, desired: T, live: T) {
        if desired != live {
            self.push(field, &live, &desired, false);
        }
    }

    /// Like [`Diff::field`], for fields that AWS cannot change in place.
    pub fn replace_field<T: Serialize + PartialEq>(&mut self, field: F, desired: T, live: T) {
        if desired != live {
            self.push(field, &live, &desired, true);
        }
    }

    /// Records a change decided by the caller (for per-field equality rules).
    pub fn push<A: Serialize, B: Serialize>(
        &mut self,
        field: F,
        old: &A,
        new: &B,
        forces_replacement: bool,
    ) {
        self.0.push(Change {
            field,
            old: serde_json::to_value(old).unwrap_or(Value::Null),
            new: serde_json::to_value(new).unwrap_or(Value::Null),
            forces_replacement,
        });
    }

    /// Whether `field` changed; `field` may be a typed field or, where the field set compares
    /// with them, its name.
    pub fn has<Q>(&self, field: Q) -> bool
    where
        F: PartialEq<Q>,
    {
        self.0.iter().any(|c| c.field == field)
    }

    /// The fields that changed, as an update takes them.
    pub fn fields(&self) -> Vec<F> {
        self.0.iter().map(|c| c.field.clone()).collect()
    }

    /// The changes as plans hold them.
    pub fn named(self) -> Vec<Change> {
        self.0.into_iter().map(Change::named).collect()
    }
}

/// Who a live resource belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ownership {
    /// Carries this stack's ownership tags.
    Ours,
    /// Has our name but not our tags: never touched.
    Foreign,
    /// Cannot carry tags (a scaling policy, say): it belongs to whoever owns its dependency.
    Inherited,
}

/// One AWS resource kind. Implementations are stateless; everything they need is in the
/// spec, the observed state and the [`Ctx`].
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    type Spec: Send + Sync + 'static;
    type Observed: Send + Sync + 'static;

    /// The fields [`Provider::diff`] reports and [`Provider::update`] acts on.
    type Field: Field;

    /// Short kind name, as in resource ids (`s3_bucket`).
    const KIND: &'static str;

    /// About how many round-trips one after another a create of this kind takes. Apply starts
    /// the longest chains of these first, so a slow kind at the head of a long chain (a REST
    /// API, then its stage, then a usage plan) does not wait behind quick ones.
    const ROUND_TRIPS: u32 = 1;

    /// About how many round-trips one after another a read of this kind takes (a lookup by
    /// name, then its details). A plan starts the deepest reads first: reads beyond the
    /// bound on reads in flight wait for a slot, and a server answers a burst in about the
    /// order it arrived, so a two-step read sent last finishes its second step last.
    const READ_ROUND_TRIPS: u32 = 1;

    /// Whether a create that meets the resource already made (by another run, or by its own
    /// lost answer) ends well anyway: it is a named create that fails with "already exists"
    /// (which [`Node::create`] finishes from live state when the tags are ours) or an upsert.
    /// Then apply need not read the resource again under the lock before creating it. Unnamed
    /// creates (a second CreateRestApi makes a second API) and creates with side effects (the
    /// seed's invocation) leave it `false`.
    const CREATE_CONVERGES: bool = false;

    /// The live state, or `None` when the resource does not exist.
    async fn read(&self, ctx: &Ctx, spec: &Self::Spec) -> Result<Option<Self::Observed>>;

    /// Whether an update of `observed` making `changes` guards itself: its first write carries
    /// a revision the plan's read saw (Lambda's RevisionId), so AWS refuses it when anything
    /// changed the resource since. Then apply need not read the resource again under the lock
    /// before updating it, as for a create that converges.
    fn update_guarded(_observed: &Self::Observed, _changes: &[Self::Field]) -> bool {
        false
    }

    /// Reads again, under the lock, a resource the shown plan changes. The default is
    /// [`Provider::read`]; a provider whose read takes a shortcut for a resource that needs no
    /// change skips it here, where one is known to be needed.
    async fn read_again(&self, ctx: &Ctx, spec: &Self::Spec) -> Result<Option<Self::Observed>> {
        self.read(ctx, spec).await
    }

    /// Live tags, or `None` for kinds that cannot carry tags.
    fn tags(observed: &Self::Observed) -> Option<&BTreeMap<String, String>>;

    /// The desired fields, shown when the resource is created.
    fn describe(spec: &Self::Spec) -> Diff<Self::Field>;

    /// What differs between spec and live state; empty when nothing does.
    fn diff(spec: &Self::Spec, observed: &Self::Observed) -> Diff<Self::Field>;

    async fn create(&self, ctx: &Ctx, spec: &Self::Spec) -> Result<()>;

    /// Brings the fields `changes` names (from [`Provider::diff`]) to the spec.
    async fn update(
        &self,
        ctx: &Ctx,
        spec: &Self::Spec,
        observed: &Self::Observed,
        changes: &[Self::Field],
    ) -> Result<()>;

    /// Deletes the resource; succeeds when it is already gone.
    async fn delete(&self, ctx: &Ctx, spec: &Self::Spec, observed: &Self::Observed) -> Result<()>;

    /// Extra facts for a planned deletion (e.g. how many object versions a bucket holds).
    async fn deletion_details(
        &self,
        _ctx: &Ctx,
        _observed: &Self::Observed,
    ) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Whether replacing this resource would lose data.
    async fn holds_data(&self, _ctx: &Ctx, _observed: &Self::Observed) -> Result<bool> {
        Ok(false)
    }
}

/// What reading a node found, in the engine's terms.
#[derive(Debug, Clone)]
pub struct Observation {
    pub exists: bool,
    pub ownership: Ownership,
    /// Changes against live state, or the described fields when the resource is missing.
    pub changes: Vec<Change>,
}

/// Which read a node's [`Node::observe`] is: the plan's, or the re-read under the lock of what
/// the shown plan acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Plan,
    Replan,
}

/// A resource of the stack bound to its provider: the engine's unit of work.
#[async_trait]
pub trait Node: Send + Sync {
    fn id(&self) -> &str;
    fn kind(&self) -> &'static str;
    fn name(&self) -> &str;
    fn depends_on(&self) -> &[String];
    fn ensure(&self) -> Ensure;
    /// See [`Provider::ROUND_TRIPS`].
    fn round_trips(&self) -> u32;
    /// See [`Provider::READ_ROUND_TRIPS`].
    fn read_round_trips(&self) -> u32;
    /// See [`Provider::CREATE_CONVERGES`].
    fn create_converges(&self) -> bool;
    /// See [`Provider::update_guarded`]; `false` before the node was read.
    fn update_guarded(&self, changes: &[Change]) -> bool;
    /// Reads live state once and keeps it for the actions that follow.
    async fn observe(
        &self,
        ctx: &Ctx,
        owner_tags: &BTreeMap<String, String>,
        pass: Pass,
    ) -> Result<Observation>;
    async fn deletion_details(&self, ctx: &Ctx) -> Result<Vec<String>>;
    async fn holds_data(&self, ctx: &Ctx) -> Result<bool>;
    async fn create(&self, ctx: &Ctx) -> Result<()>;
    async fn update(&self, ctx: &Ctx, changes: &[Change]) -> Result<()>;
    async fn delete(&self, ctx: &Ctx) -> Result<()>;
}

/// The generic [`Node`] over a typed provider.
pub struct Bound<P: Provider> {
    pub provider: P,
    pub id: String,
    pub name: String,
    pub depends_on: Vec<String>,
    pub ensure: Ensure,
    pub spec: P::Spec,
    observed: OnceLock<Option<Arc<P::Observed>>>,
    /// The ownership tags the plan checked against, for a create that must look again.
    owner_tags: OnceLock<BTreeMap<String, String>>,
}

impl<P: Provider> Bound<P> {
    pub fn new(provider: P, resource: &stacks::Resource, spec: P::Spec) -> Bound<P> {
        Bound {
            provider,
            id: resource.id.clone(),
            name: resource.spec.name().to_string(),
            depends_on: resource.depends_on.clone(),
            ensure: resource.ensure,
            spec,
            observed: OnceLock::new(),
            owner_tags: OnceLock::new(),
        }
    }

    fn observed(&self) -> Option<Arc<P::Observed>> {
        self.observed.get().cloned().flatten()
    }

    /// The plan's changes (by name) as the provider's typed fields: the diff of the same spec
    /// and live state again, kept to what the plan holds. A name it does not report is a plan
    /// that was not made from this node's reading: refused rather than guessed at.
    fn fields(&self, observed: &P::Observed, changes: &[Change]) -> Result<Vec<P::Field>> {
        let diff = P::diff(&self.spec, observed);
        changes
            .iter()
            .map(|c| {
                diff.0
                    .iter()
                    .find(|d| d.field.to_string() == c.field)
                    .map(|d| d.field.clone())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}: the plan changes {}, which its live state does not differ in",
                            self.id,
                            c.field
                        )
                    })
            })
            .collect()
    }
}

/// Whether `live` carries every ownership tag with our value.
pub fn owns(owner_tags: &BTreeMap<String, String>, live: &BTreeMap<String, String>) -> bool {
    owner_tags.iter().all(|(k, v)| live.get(k) == Some(v))
}

#[async_trait]
impl<P: Provider> Node for Bound<P> {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        P::KIND
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn depends_on(&self) -> &[String] {
        &self.depends_on
    }
    fn ensure(&self) -> Ensure {
        self.ensure
    }
    fn round_trips(&self) -> u32 {
        P::ROUND_TRIPS
    }
    fn read_round_trips(&self) -> u32 {
        P::READ_ROUND_TRIPS
    }
    fn create_converges(&self) -> bool {
        P::CREATE_CONVERGES
    }
    fn update_guarded(&self, changes: &[Change]) -> bool {
        let Some(o) = self.observed() else {
            return false;
        };
        self.fields(&o, changes)
            .is_ok_and(|fields| P::update_guarded(&o, &fields))
    }

    async fn observe(
        &self,
        ctx: &Ctx,
        owner_tags: &BTreeMap<String, String>,
        pass: Pass,
    ) -> Result<Observation> {
        let _ = self.owner_tags.set(owner_tags.clone());
        let live = match pass {
            Pass::Plan => self.provider.read(ctx, &self.spec).await?,
            Pass::Replan => self.provider.read_again(ctx, &self.spec).await?,
        };
        let observation = match &live {
            None => Observation {
                exists: false,
                ownership: Ownership::Ours,
                changes: P::describe(&self.spec).named(),
            },
            Some(o) => Observation {
                exists: true,
                ownership: match P::tags(o) {
                    None => Ownership::Inherited,
                    Some(t) if owns(owner_tags, t) => Ownership::Ours,
                    Some(_) => Ownership::Foreign,
                },
                changes: P::diff(&self.spec, o).named(),
            },
        };
        let _ = self.observed.set(live.map(Arc::new));
        Ok(observation)
    }

    async fn deletion_details(&self, ctx: &Ctx) -> Result<Vec<String>> {
        match self.observed() {
            Some(o) => self.provider.deletion_details(ctx, &o).await,
            None => Ok(Vec::new()),
        }
    }

    async fn holds_data(&self, ctx: &Ctx) -> Result<bool> {
        match self.observed() {
            Some(o) => self.provider.holds_data(ctx, &o).await,
            None => Ok(false),
        }
    }

    async fn create(&self, ctx: &Ctx) -> Result<()> {
        let failed = match self.provider.create(ctx, &self.spec).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // A create whose answer was lost may still have been executed, and the SDK's retry of
        // it then fails ("already exists"). Look before failing: what is there now and carries
        // our tags is ours, and only what still differs from the spec is left to do.
        let live = match self.provider.read(ctx, &self.spec).await {
            Ok(Some(live)) => live,
            // Nothing was made: an unnamed create that was held back may now be sent again.
            Ok(None) if crate::aws::lost_answer(&failed) => {
                tracing::warn!(id = %self.id, "a create's answer was lost and it made nothing: creating again");
                return self
                    .provider
                    .create(ctx, &self.spec)
                    .await
                    .with_context(|| format!("after {failed:#}"));
            }
            _ => return Err(failed),
        };
        let ours = match (P::tags(&live), self.owner_tags.get()) {
            (None, _) => true,
            (Some(live_tags), Some(owner)) => owns(owner, live_tags),
            (Some(_), None) => false,
        };
        let diff = P::diff(&self.spec, &live);
        if !ours || diff.0.iter().any(|c| c.forces_replacement) {
            return Err(failed);
        }
        tracing::warn!(
            id = %self.id,
            error = %format!("{failed:#}"),
            remaining = diff.0.len(),
            "the create failed but the resource exists with our tags: finishing it"
        );
        if diff.0.is_empty() {
            return Ok(());
        }
        self.provider
            .update(ctx, &self.spec, &live, &diff.fields())
            .await
            .with_context(|| format!("{failed:#}"))
    }

    async fn update(&self, ctx: &Ctx, changes: &[Change]) -> Result<()> {
        let observed = self
            .observed()
            .ok_or_else(|| anyhow::anyhow!("{}: update planned without live state", self.id))?;
        let fields = self.fields(&observed, changes)?;
        let failed = match self
            .provider
            .update(ctx, &self.spec, &observed, &fields)
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) if crate::aws::lost_answer(&e) => e,
            Err(e) => return Err(e),
        };
        // An unnamed create inside the update (a version, a deployment) lost its answer: look
        // at what is there now and do only what is still missing.
        let Some(live) = self.provider.read(ctx, &self.spec).await? else {
            return Err(failed);
        };
        let remaining = P::diff(&self.spec, &live).fields();
        tracing::warn!(id = %self.id, remaining = remaining.len(), "an update's answer was lost: finishing from live state");
        if remaining.is_empty() {
            return Ok(());
        }
        self.provider
            .update(ctx, &self.spec, &live, &remaining)
            .await
            .with_context(|| format!("after {failed:#}"))
    }

    async fn delete(&self, ctx: &Ctx) -> Result<()> {
        match self.observed() {
            Some(o) => self.provider.delete(ctx, &self.spec, &o).await,
            None => Ok(()),
        }
    }
}
