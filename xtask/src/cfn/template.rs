//! Template synthesis: the stack model (`stacks::invoice_app`) as one CloudFormation template.
//!
//! There is no second description of the app: [`synth`] walks the same `Vec<Resource>` the
//! direct engine deploys, with one exhaustive `match` over [`Spec`] handing each kind to its
//! own `map_*` function, which destructures the spec struct without `..`, so a new kind or a
//! new field does not compile until it has a CloudFormation form here. Each field is recorded as a [`Binding`] (where it landed in the
//! template, or why it has no place there); the tests check every binding against the spec's
//! own serialisation, so a field can be neither forgotten nor mis-placed.
//!
//! The template is portable: it is built for account `${AWS::AccountId}` and region
//! `${AWS::Region}`, and every string that names them becomes an `Fn::Sub`. The same template
//! therefore serves `synth`, review in CI without credentials, and `apply --engine
//! cloudformation` in any account.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use stacks::names::{MANAGED_BY_CLOUDFORMATION, TAG_MANAGED_BY};
use stacks::*;

use crate::providers::rest_api::{
    self, ALLOW_HEADERS, ALLOW_METHODS, ALLOW_ORIGIN, CORS_ALLOWED_HEADERS, MOCK_TEMPLATE,
    PARAMS_VALIDATOR, QUERY, Target as RouteTarget,
};

/// The account the template is synthesised for: CloudFormation substitutes it.
pub const ACCOUNT: &str = "${AWS::AccountId}";
/// The region the template is synthesised for: CloudFormation substitutes it.
pub const REGION: &str = "${AWS::Region}";

/// The managed policy API Gateway's CloudWatch role carries (as the direct engine's).
const APIGW_LOGS_POLICY: &str =
    "arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs";

/// How a template value relates to the spec field it came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Conv {
    /// The field's own JSON value (`Null`: the property is absent).
    Same,
    /// A boolean as `Enabled` / `Suspended`.
    Enabled,
    /// A tag map as CloudFormation's `[{Key, Value}]`, with the engine marker.
    Tags,
    /// A value the mapping derives from the field (a reference, a nested structure).
    Expect(Value),
}

/// Where one spec field went.
#[derive(Debug, Clone, PartialEq)]
pub enum Place {
    /// At `pointer` (a JSON pointer) inside the template resource `logical_id`.
    At {
        logical_id: String,
        pointer: String,
        conv: Conv,
    },
    /// Not in the template, and why.
    Omitted(&'static str),
}

/// One field of one stack resource, and its place in the template.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The stack resource id (`s3_bucket.artifacts`).
    pub resource: String,
    pub field: &'static str,
    pub place: Place,
}

/// A synthesised template and the record of where each spec field went.
#[derive(Debug, Clone)]
pub struct Template {
    pub body: Value,
    pub bindings: Vec<Binding>,
}

impl Template {
    /// Resource count per CloudFormation type.
    pub fn count_by_type(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        if let Some(rs) = self.body["Resources"].as_object() {
            for r in rs.values() {
                *out.entry(r["Type"].as_str().unwrap_or("?").to_string())
                    .or_insert(0) += 1;
            }
        }
        out
    }

    /// The template as CloudFormation reads it (pretty JSON, stable key order).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.body).expect("a template serialises")
    }
}

/// The CloudFormation logical id of a stack resource id: `s3_bucket.artifacts` ->
/// `S3BucketArtifacts` (alphanumeric, as CloudFormation requires).
pub fn logical_id(id: &str) -> String {
    let mut out = String::new();
    for part in id.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    out
}

/// Tags as CloudFormation lists them, with `managed-by` naming this engine: the marker that
/// keeps the direct engine from adopting what CloudFormation deploys.
pub fn tag_list(tags: &BTreeMap<String, String>) -> Value {
    let mut tags = tags.clone();
    tags.insert(TAG_MANAGED_BY.into(), MANAGED_BY_CLOUDFORMATION.into());
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

fn r#ref(logical: &str) -> Value {
    json!({ "Ref": logical })
}

fn get_att(logical: &str, attr: &str) -> Value {
    json!({ "Fn::GetAtt": [logical, attr] })
}

/// Builds the template resources of one stack resource and records its bindings.
struct Out<'a> {
    resource: &'a str,
    resources: Map<String, Value>,
    bindings: Vec<Binding>,
}

impl Out<'_> {
    fn add(&mut self, logical: &str, kind: &str, properties: Value, depends_on: &[String]) {
        let mut r = json!({
            "Type": kind,
            "Properties": properties,
            "Metadata": {"Xtask": {"ResourceId": self.resource}},
        });
        if !depends_on.is_empty() {
            let mut d = depends_on.to_vec();
            d.sort();
            d.dedup();
            r["DependsOn"] = json!(d);
        }
        self.resources.insert(logical.to_string(), r);
    }

    /// Attributes outside `Properties` (`DeletionPolicy`, ...).
    fn set(&mut self, logical: &str, key: &str, value: Value) {
        if let Some(r) = self.resources.get_mut(logical) {
            r[key] = value;
        }
    }

    fn bind(&mut self, field: &'static str, logical: &str, pointer: &str, conv: Conv) {
        self.bindings.push(Binding {
            resource: self.resource.to_string(),
            field,
            place: Place::At {
                logical_id: logical.to_string(),
                pointer: pointer.to_string(),
                conv,
            },
        });
    }

    /// Binds fields that land as they are, each at its pointer inside `logical`.
    fn same(&mut self, logical: &str, fields: &[(&'static str, &str)]) {
        for (field, pointer) in fields {
            self.bind(field, logical, pointer, Conv::Same);
        }
    }

    /// Binds `tags`, which every taggable kind puts at `/Properties/Tags`.
    fn tags(&mut self, logical: &str) {
        self.bind("tags", logical, "/Properties/Tags", Conv::Tags);
    }

    /// What CloudFormation does with the resource on delete and on replacement.
    fn deletion(&mut self, logical: &str, policy: &str) {
        self.set(logical, "DeletionPolicy", json!(policy));
        self.set(logical, "UpdateReplacePolicy", json!(policy));
    }

    fn omit(&mut self, field: &'static str, why: &'static str) {
        self.bindings.push(Binding {
            resource: self.resource.to_string(),
            field,
            place: Place::Omitted(why),
        });
    }
}

/// What the mapping of one resource may need to know about the others.
struct Lookup<'a> {
    stack: &'a Stack,
}

impl Lookup<'_> {
    fn present(&self) -> impl Iterator<Item = &Resource> {
        self.stack
            .resources
            .iter()
            .filter(|r| r.ensure == Ensure::Present)
    }

    fn table(&self, name: &str) -> Option<String> {
        self.present()
            .find(|r| matches!(&r.spec, Spec::Table(t) if t.name == name))
            .map(|r| logical_id(&r.id))
    }

    fn api(&self, name: &str) -> Option<String> {
        self.present()
            .find(|r| matches!(&r.spec, Spec::RestApi(a) if a.name == name))
            .map(|r| logical_id(&r.id))
    }

    fn stage(&self, api: &str, stage: &str) -> Option<String> {
        self.present()
            .find(|r| {
                matches!(&r.spec, Spec::ApiStage(s) if s.api_name == api && s.stage_name == stage)
            })
            .map(|r| logical_id(&r.id))
    }

    fn key(&self, name: &str) -> Option<String> {
        self.present()
            .find(|r| matches!(&r.spec, Spec::ApiKey(k) if k.name == name))
            .map(|r| logical_id(&r.id))
    }

    /// The alias of a function the template deploys.
    fn alias(&self, function: &str) -> Option<String> {
        self.present()
            .find(|r| matches!(&r.spec, Spec::Function(f) if f.name == function))
            .map(|r| format!("{}Alias", logical_id(&r.id)))
    }

    fn depends(&self, r: &Resource) -> Vec<String> {
        r.depends_on
            .iter()
            .filter(|d| self.present().any(|p| &p.id == *d))
            .filter(|d| {
                // Artifacts are uploaded before the change set; they are not template resources.
                !self
                    .stack
                    .get(d)
                    .is_some_and(|p| matches!(p.spec, Spec::Object(_)))
            })
            .map(|d| logical_id(d))
            .collect()
    }
}

/// The deployment's logical id: the content hash in it makes a changed API a new deployment.
pub fn deployment_logical_id(api_logical: &str, hash: &str) -> String {
    format!("{api_logical}Deployment{}", &hash[..hash.len().min(12)])
}

fn path_logical(api_logical: &str, path: &str) -> String {
    format!("{api_logical}Path{}", logical_id(path))
}

fn method_logical(api_logical: &str, method: &str, path: &str) -> String {
    format!(
        "{api_logical}Method{}{}",
        logical_id(&method.to_ascii_lowercase()),
        logical_id(path)
    )
}

/// The template of a whole stack. Absent resources are simply not in it: a stack update
/// then deletes what an earlier template had.
pub fn synth(stack: &Stack, description: &str) -> Template {
    let look = Lookup { stack };
    let mut resources = Map::new();
    let mut bindings = Vec::new();
    for r in look.present() {
        let mut out = Out {
            resource: &r.id,
            resources: Map::new(),
            bindings: Vec::new(),
        };
        map(r, &look, &mut out);
        resources.append(&mut out.resources);
        bindings.append(&mut out.bindings);
    }
    let outputs = outputs(&look);
    let mut body = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": description,
        "Resources": resources,
    });
    if !outputs.is_empty() {
        body["Outputs"] = Value::Object(outputs);
    }
    prune_implied_dependencies(&mut body);
    substitute(&mut body);
    Template { body, bindings }
}

/// Drops `DependsOn` entries a `Ref`, `Fn::GetAtt` or `Fn::Sub` of the same resource already
/// implies (CloudFormation orders by those anyway, and cfn-lint warns about the repetition),
/// and entries on stack resources with no template form here (an account setting only checked).
fn prune_implied_dependencies(body: &mut Value) {
    fn refs(v: &Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("Ref") {
                    out.insert(r.clone());
                }
                if let Some(Value::String(att)) = o.get("Fn::GetAtt").and_then(|a| a.get(0)) {
                    out.insert(att.clone());
                }
                if let Some(Value::String(sub)) = o.get("Fn::Sub") {
                    for part in sub.split("${").skip(1) {
                        let var = part.split('}').next().unwrap_or_default();
                        out.insert(var.split('.').next().unwrap_or_default().to_string());
                    }
                }
                o.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let Some(resources) = body["Resources"].as_object_mut() else {
        return;
    };
    let exists: std::collections::BTreeSet<String> = resources.keys().cloned().collect();
    for r in resources.values_mut() {
        let mut implied = std::collections::BTreeSet::new();
        refs(&r["Properties"], &mut implied);
        let Some(Value::Array(deps)) = r.get_mut("DependsOn") else {
            continue;
        };
        deps.retain(|d| {
            d.as_str()
                .is_some_and(|d| !implied.contains(d) && exists.contains(d))
        });
        if deps.is_empty() {
            r.as_object_mut().map(|o| o.remove("DependsOn"));
        }
    }
}

/// The outputs `apply` prints: invoke URL, key id, table, bucket and alias names.
fn outputs(look: &Lookup<'_>) -> Map<String, Value> {
    let mut out = Map::new();
    let mut put = |name: String, description: String, value: Value| {
        out.insert(name, json!({"Description": description, "Value": value}));
    };
    for r in look.present() {
        let l = logical_id(&r.id);
        match &r.spec {
            // Descriptions name the stack resource, never the physical name: that may hold
            // `${AWS::AccountId}`, and an output's description must be a plain string.
            Spec::Bucket(_) => put(format!("{l}Name"), format!("bucket {}", r.id), r#ref(&l)),
            Spec::Table(_) => put(format!("{l}Name"), format!("table {}", r.id), r#ref(&l)),
            Spec::Function(f) => put(
                format!("{l}AliasArn"),
                format!("alias {} of {}", f.alias, r.id),
                r#ref(&format!("{l}Alias")),
            ),
            Spec::ApiStage(s) => {
                if let Some(api) = look.api(&s.api_name) {
                    put(
                        "InvokeUrl".into(),
                        format!("invoke URL of stage {}", s.stage_name),
                        json!({"Fn::Sub": format!(
                            "https://${{{api}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/${{{l}}}"
                        )}),
                    );
                }
            }
            Spec::ApiKey(_) => put(
                "ApiKeyId".into(),
                format!("id of API key {}", r.id),
                r#ref(&l),
            ),
            _ => {}
        }
    }
    out
}

/// Wraps every string naming the synthesis account or region in `Fn::Sub` (once).
fn substitute(v: &mut Value) {
    match v {
        Value::String(s) if s.contains("${AWS::") => {
            *v = json!({ "Fn::Sub": s.clone() });
        }
        Value::Array(a) => a.iter_mut().for_each(substitute),
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                if k != "Fn::Sub" {
                    substitute(v);
                }
            }
        }
        _ => {}
    }
}

/// The one mapping from the stack model to CloudFormation: one function per kind.
fn map(r: &Resource, look: &Lookup<'_>, out: &mut Out<'_>) {
    let l = logical_id(&r.id);
    let deps = look.depends(r);
    match &r.spec {
        Spec::Bucket(spec) => map_bucket(&l, spec, &deps, out),
        Spec::Table(spec) => map_table(&l, spec, &deps, out),
        Spec::ScalableTarget(spec) => map_scalable_target(&l, spec, &deps, out),
        Spec::ScalingPolicy(spec) => map_scaling_policy(&l, spec, &deps, out),
        Spec::Role(spec) => map_role(&l, spec, &deps, out),
        Spec::LogGroup(spec) => map_log_group(&l, spec, &deps, out),
        Spec::Object(spec) => map_object(spec, out),
        Spec::Function(spec) => map_function(&l, spec, &deps, out),
        Spec::EventSourceMapping(spec) => map_event_source_mapping(&l, spec, look, &deps, out),
        Spec::ApiAccount(spec) => map_api_account(&l, spec, &deps, out),
        Spec::RestApi(spec) => map_rest_api(&l, spec, &deps, out),
        Spec::ApiStage(spec) => map_api_stage(&l, spec, look, &deps, out),
        Spec::ApiKey(spec) => map_api_key(&l, spec, &deps, out),
        Spec::UsagePlan(spec) => map_usage_plan(&l, spec, look, out),
        Spec::LambdaPermission(spec) => map_lambda_permission(&l, spec, look, &deps, out),
        Spec::Seed(spec) => map_seed(spec, out),
    }
}

/// `deps` without `logical`: for resources whose properties already `Ref` it.
fn without(deps: &[String], logical: &str) -> Vec<String> {
    deps.iter().filter(|d| *d != logical).cloned().collect()
}

/// A bucket and, when it has one, its policy.
fn map_bucket(l: &str, spec: &BucketSpec, deps: &[String], out: &mut Out<'_>) {
    let BucketSpec {
        name,
        versioning,
        encryption,
        block_public_access,
        owner_enforced,
        noncurrent_version_expiry_days,
        // In the bucket policy: `desired_policy` below.
        tls_only: _,
        tags,
    } = spec;
    let ownership = if *owner_enforced {
        "BucketOwnerEnforced"
    } else {
        "BucketOwnerPreferred"
    };
    let mut p = json!({
        "BucketName": name,
        "VersioningConfiguration": {"Status": if *versioning { "Enabled" } else { "Suspended" }},
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": encryption}}
        ]},
        "OwnershipControls": {"Rules": [{"ObjectOwnership": ownership}]},
        "Tags": tag_list(tags),
    });
    let pab = json!({
        "BlockPublicAcls": block_public_access,
        "BlockPublicPolicy": block_public_access,
        "IgnorePublicAcls": block_public_access,
        "RestrictPublicBuckets": block_public_access,
    });
    p["PublicAccessBlockConfiguration"] = pab.clone();
    if let Some(days) = noncurrent_version_expiry_days {
        p["LifecycleConfiguration"] = json!({"Rules": [{
            "Id": crate::providers::s3_bucket::LIFECYCLE_RULE_ID,
            "Status": "Enabled",
            "Prefix": "",
            "NoncurrentVersionExpiration": {"NoncurrentDays": days},
        }]});
    }
    out.add(l, "AWS::S3::Bucket", p, deps);
    // Destroy purges versions first, then deletes: as the direct engine does.
    out.deletion(l, "Delete");
    out.same(l, &[
        ("name", "/Properties/BucketName"),
        ("encryption", "/Properties/BucketEncryption/ServerSideEncryptionConfiguration/0/ServerSideEncryptionByDefault/SSEAlgorithm"),
        ("noncurrent_version_expiry_days", "/Properties/LifecycleConfiguration/Rules/0/NoncurrentVersionExpiration/NoncurrentDays"),
    ]);
    out.bind(
        "versioning",
        l,
        "/Properties/VersioningConfiguration/Status",
        Conv::Enabled,
    );
    out.bind(
        "block_public_access",
        l,
        "/Properties/PublicAccessBlockConfiguration",
        Conv::Expect(pab),
    );
    out.bind(
        "owner_enforced",
        l,
        "/Properties/OwnershipControls/Rules/0/ObjectOwnership",
        Conv::Expect(json!(ownership)),
    );
    let policy_l = format!("{l}Policy");
    let policy = crate::providers::s3_bucket::desired_policy(spec, REGION);
    if let Some(doc) = &policy {
        out.add(
            &policy_l,
            "AWS::S3::BucketPolicy",
            json!({"Bucket": r#ref(l), "PolicyDocument": doc}),
            &[],
        );
    }
    out.bind(
        "tls_only",
        &policy_l,
        "/Properties/PolicyDocument",
        Conv::Expect(policy.unwrap_or(Value::Null)),
    );
    out.tags(l);
}

/// One entry of a key schema.
fn key(k: &KeyAttr, key_type: &str) -> Value {
    json!({"AttributeName": k.name, "KeyType": key_type})
}

/// A key schema: the hash key, then the range key if any.
fn key_schema(hash_key: &KeyAttr, range_key: &Option<KeyAttr>) -> Vec<Value> {
    let mut schema = vec![key(hash_key, "HASH")];
    if let Some(rk) = range_key {
        schema.push(key(rk, "RANGE"));
    }
    schema
}

fn throughput(c: &Capacity) -> Value {
    json!({"ReadCapacityUnits": c.read, "WriteCapacityUnits": c.write})
}

fn gsi(g: &GsiSpec) -> Value {
    let GsiSpec {
        name,
        hash_key,
        range_key,
        projection_all,
        capacity,
    } = g;
    let mut v = json!({
        "IndexName": name,
        "KeySchema": key_schema(hash_key, range_key),
        "Projection": {"ProjectionType": if *projection_all { "ALL" } else { "KEYS_ONLY" }},
    });
    if let Some(c) = capacity {
        v["ProvisionedThroughput"] = throughput(c);
    }
    v
}

fn map_table(l: &str, spec: &TableSpec, deps: &[String], out: &mut Out<'_>) {
    let TableSpec {
        name,
        hash_key,
        range_key,
        billing,
        gsis,
        stream,
        sse_kms,
        point_in_time_recovery,
        deletion_protection,
        tags,
    } = spec;
    let mut attrs: BTreeMap<&str, &str> = BTreeMap::new();
    for k in std::iter::once(hash_key).chain(range_key.iter()).chain(
        gsis.iter()
            .flat_map(|g| std::iter::once(&g.hash_key).chain(&g.range_key)),
    ) {
        attrs.insert(&k.name, k.attr_type.as_str());
    }
    let gsi_list: Vec<Value> = gsis.iter().map(gsi).collect();
    let (mode, provisioned) = match billing {
        Billing::Provisioned(c) => ("PROVISIONED", Some(throughput(c))),
        Billing::PayPerRequest => ("PAY_PER_REQUEST", None),
    };
    let sse = if *sse_kms {
        json!({"SSEEnabled": true, "SSEType": "KMS"})
    } else {
        json!({"SSEEnabled": false})
    };
    let mut p = json!({
        "TableName": name,
        "AttributeDefinitions": attrs.iter().map(|(n, t)| json!({"AttributeName": n, "AttributeType": t})).collect::<Vec<_>>(),
        "KeySchema": key_schema(hash_key, range_key),
        "BillingMode": mode,
        "SSESpecification": sse,
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": point_in_time_recovery},
        "DeletionProtectionEnabled": deletion_protection,
        "Tags": tag_list(tags),
    });
    if let Some(t) = &provisioned {
        p["ProvisionedThroughput"] = t.clone();
    }
    if !gsi_list.is_empty() {
        p["GlobalSecondaryIndexes"] = json!(gsi_list);
    }
    if let Some(s) = stream {
        p["StreamSpecification"] = json!({"StreamViewType": s});
    }
    out.add(l, "AWS::DynamoDB::Table", p, deps);
    out.deletion(l, "Delete");
    out.same(
        l,
        &[
            ("name", "/Properties/TableName"),
            ("stream", "/Properties/StreamSpecification/StreamViewType"),
            (
                "point_in_time_recovery",
                "/Properties/PointInTimeRecoverySpecification/PointInTimeRecoveryEnabled",
            ),
            (
                "deletion_protection",
                "/Properties/DeletionProtectionEnabled",
            ),
        ],
    );
    let range = range_key.as_ref().map_or(Value::Null, |k| key(k, "RANGE"));
    let gsis = if gsi_list.is_empty() {
        Value::Null
    } else {
        json!(gsi_list)
    };
    for (field, pointer, value) in [
        ("hash_key", "/Properties/KeySchema/0", key(hash_key, "HASH")),
        ("range_key", "/Properties/KeySchema/1", range),
        ("billing", "/Properties/BillingMode", json!(mode)),
        (
            "billing",
            "/Properties/ProvisionedThroughput",
            provisioned.unwrap_or(Value::Null),
        ),
        ("gsis", "/Properties/GlobalSecondaryIndexes", gsis),
        ("sse_kms", "/Properties/SSESpecification", sse),
    ] {
        out.bind(field, l, pointer, Conv::Expect(value));
    }
    out.tags(l);
}

fn map_scalable_target(l: &str, spec: &ScalableTargetSpec, deps: &[String], out: &mut Out<'_>) {
    let ScalableTargetSpec {
        resource_id,
        dimension,
        min,
        max,
    } = spec;
    out.add(
        l,
        "AWS::ApplicationAutoScaling::ScalableTarget",
        json!({
            "ServiceNamespace": "dynamodb",
            "ResourceId": resource_id,
            "ScalableDimension": dimension,
            "MinCapacity": min,
            "MaxCapacity": max,
        }),
        deps,
    );
    out.same(
        l,
        &[
            ("resource_id", "/Properties/ResourceId"),
            ("dimension", "/Properties/ScalableDimension"),
            ("min", "/Properties/MinCapacity"),
            ("max", "/Properties/MaxCapacity"),
        ],
    );
}

fn map_scaling_policy(l: &str, spec: &ScalingPolicySpec, deps: &[String], out: &mut Out<'_>) {
    let ScalingPolicySpec {
        name,
        resource_id,
        dimension,
        metric,
        target_value,
        scale_in_cooldown_secs,
        scale_out_cooldown_secs,
    } = spec;
    const T: &str = "/Properties/TargetTrackingScalingPolicyConfiguration";
    // The target is named by resource id and dimension (not `ScalingTargetId`), as the
    // direct engine does; the dependency orders them.
    out.add(
        l,
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        json!({
            "PolicyName": name,
            "PolicyType": "TargetTrackingScaling",
            "ServiceNamespace": "dynamodb",
            "ResourceId": resource_id,
            "ScalableDimension": dimension,
            "TargetTrackingScalingPolicyConfiguration": {
                "PredefinedMetricSpecification": {"PredefinedMetricType": metric},
                "TargetValue": target_value,
                "ScaleInCooldown": scale_in_cooldown_secs,
                "ScaleOutCooldown": scale_out_cooldown_secs,
            },
        }),
        deps,
    );
    out.same(
        l,
        &[
            ("name", "/Properties/PolicyName"),
            ("resource_id", "/Properties/ResourceId"),
            ("dimension", "/Properties/ScalableDimension"),
            (
                "metric",
                &format!("{T}/PredefinedMetricSpecification/PredefinedMetricType"),
            ),
            ("target_value", &format!("{T}/TargetValue")),
            ("scale_in_cooldown_secs", &format!("{T}/ScaleInCooldown")),
            ("scale_out_cooldown_secs", &format!("{T}/ScaleOutCooldown")),
        ],
    );
}

fn map_role(l: &str, spec: &RoleSpec, deps: &[String], out: &mut Out<'_>) {
    let RoleSpec {
        name,
        // The trust policy's principal: `spec.trust_policy()` below.
        service: _,
        managed_policy_arns,
        inline_policy_name,
        inline_policy,
        tags,
    } = spec;
    out.add(
        l,
        "AWS::IAM::Role",
        json!({
            "RoleName": name,
            "AssumeRolePolicyDocument": spec.trust_policy(),
            "ManagedPolicyArns": managed_policy_arns,
            "Policies": [{"PolicyName": inline_policy_name, "PolicyDocument": inline_policy}],
            "Tags": tag_list(tags),
        }),
        deps,
    );
    out.same(
        l,
        &[
            ("name", "/Properties/RoleName"),
            (
                "service",
                "/Properties/AssumeRolePolicyDocument/Statement/0/Principal/Service",
            ),
            ("managed_policy_arns", "/Properties/ManagedPolicyArns"),
            ("inline_policy_name", "/Properties/Policies/0/PolicyName"),
            ("inline_policy", "/Properties/Policies/0/PolicyDocument"),
        ],
    );
    out.tags(l);
}

fn map_log_group(l: &str, spec: &LogGroupSpec, deps: &[String], out: &mut Out<'_>) {
    let LogGroupSpec {
        name,
        retention_days,
        tags,
    } = spec;
    out.add(
        l,
        "AWS::Logs::LogGroup",
        json!({"LogGroupName": name, "RetentionInDays": retention_days, "Tags": tag_list(tags)}),
        deps,
    );
    out.deletion(l, "Delete");
    out.same(
        l,
        &[
            ("name", "/Properties/LogGroupName"),
            ("retention_days", "/Properties/RetentionInDays"),
        ],
    );
    out.tags(l);
}

fn map_object(spec: &ObjectSpec, out: &mut Out<'_>) {
    let ObjectSpec {
        bucket: _,
        key: _,
        source: _,
        sha256_b64: _,
    } = spec;
    const WHY: &str = "the zip is uploaded by xtask before the change set (`synth --upload`, `apply --engine cloudformation`); the function's Code names its bucket and key";
    for field in ["bucket", "key", "source", "sha256_b64"] {
        out.omit(field, WHY);
    }
}

/// A function, the version its code and configuration make, and the alias pointing at it.
fn map_function(l: &str, spec: &FunctionSpec, deps: &[String], out: &mut Out<'_>) {
    let FunctionSpec {
        name,
        role_arn,
        runtime,
        handler,
        architecture,
        memory_mb,
        timeout_secs,
        environment,
        code_bucket,
        code_key,
        // CloudFormation always reads the code from S3 (the flow uploads it first).
        code_zip: _,
        code_sha256_hex,
        code_sha256_b64,
        alias,
        keep_versions: _,
        tags,
    } = spec;
    let p = json!({
        "FunctionName": name,
        "Role": role_arn,
        "Runtime": runtime,
        "Handler": handler,
        "Architectures": [architecture],
        "MemorySize": memory_mb,
        "Timeout": timeout_secs,
        "Environment": {"Variables": environment},
        "Code": {"S3Bucket": code_bucket, "S3Key": code_key},
        "Tags": tag_list(tags),
    });
    // A new version whenever code or configuration changes, as the direct engine publishes
    // one: the hash of both is in the version's logical id.
    let version_hash = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(p.to_string().as_bytes()))
    };
    out.add(l, "AWS::Lambda::Function", p, deps);
    let version_l = format!("{l}Version{}", &version_hash[..12]);
    out.add(
        &version_l,
        "AWS::Lambda::Version",
        json!({
            "FunctionName": r#ref(l),
            "CodeSha256": code_sha256_b64,
            "Description": format!("code sha256 {code_sha256_hex}"),
        }),
        &[],
    );
    let alias_l = format!("{l}Alias");
    out.add(
        &alias_l,
        "AWS::Lambda::Alias",
        json!({
            "FunctionName": r#ref(l),
            "FunctionVersion": get_att(&version_l, "Version"),
            "Name": alias,
        }),
        &[],
    );
    out.same(
        l,
        &[
            ("name", "/Properties/FunctionName"),
            ("role_arn", "/Properties/Role"),
            ("runtime", "/Properties/Runtime"),
            ("handler", "/Properties/Handler"),
            ("architecture", "/Properties/Architectures/0"),
            ("memory_mb", "/Properties/MemorySize"),
            ("timeout_secs", "/Properties/Timeout"),
            ("environment", "/Properties/Environment/Variables"),
            ("code_bucket", "/Properties/Code/S3Bucket"),
            ("code_key", "/Properties/Code/S3Key"),
        ],
    );
    out.bind(
        "code_sha256_hex",
        &version_l,
        "/Properties/Description",
        Conv::Expect(json!(format!("code sha256 {code_sha256_hex}"))),
    );
    out.same(&version_l, &[("code_sha256_b64", "/Properties/CodeSha256")]);
    out.same(&alias_l, &[("alias", "/Properties/Name")]);
    out.omit(
        "keep_versions",
        "CloudFormation keeps the version the alias points at and deletes the one it replaced",
    );
    out.tags(l);
}

fn map_event_source_mapping(
    l: &str,
    spec: &EventSourceMappingSpec,
    look: &Lookup<'_>,
    deps: &[String],
    out: &mut Out<'_>,
) {
    let EventSourceMappingSpec {
        name: _,
        table_name,
        function_name,
        alias: _,
        starting_position,
        batch_size,
        batching_window_secs,
        bisect_on_error,
        max_retries,
        report_batch_item_failures,
        stream_view_type: _,
    } = spec;
    let stream = look
        .table(table_name)
        .map(|t| get_att(&t, "StreamArn"))
        .unwrap_or(Value::Null);
    let target = look
        .alias(function_name)
        .map(|a| r#ref(&a))
        .unwrap_or(Value::Null);
    let response_types = if *report_batch_item_failures {
        json!(["ReportBatchItemFailures"])
    } else {
        Value::Null
    };
    let mut p = json!({
        "EventSourceArn": stream,
        "FunctionName": target,
        "StartingPosition": starting_position,
        "BatchSize": batch_size,
        "MaximumBatchingWindowInSeconds": batching_window_secs,
        "BisectBatchOnFunctionError": bisect_on_error,
        "MaximumRetryAttempts": max_retries,
    });
    if *report_batch_item_failures {
        p["FunctionResponseTypes"] = response_types.clone();
    }
    out.add(l, "AWS::Lambda::EventSourceMapping", p, deps);
    out.omit("name", "a display name; mappings have none in AWS");
    out.omit(
        "stream_view_type",
        "the table's view type; in the template the mapping follows the table's StreamArn",
    );
    for (field, pointer, value) in [
        ("table_name", "/Properties/EventSourceArn", stream),
        ("function_name", "/Properties/FunctionName", target.clone()),
        ("alias", "/Properties/FunctionName", target),
        (
            "report_batch_item_failures",
            "/Properties/FunctionResponseTypes",
            response_types,
        ),
    ] {
        out.bind(field, l, pointer, Conv::Expect(value));
    }
    out.same(
        l,
        &[
            ("starting_position", "/Properties/StartingPosition"),
            ("batch_size", "/Properties/BatchSize"),
            (
                "batching_window_secs",
                "/Properties/MaximumBatchingWindowInSeconds",
            ),
            ("bisect_on_error", "/Properties/BisectBatchOnFunctionError"),
            ("max_retries", "/Properties/MaximumRetryAttempts"),
        ],
    );
}

/// API Gateway's account setting and the CloudWatch role it names, when the stack sets it up.
fn map_api_account(l: &str, spec: &ApiAccountSpec, deps: &[String], out: &mut Out<'_>) {
    let ApiAccountSpec { setup, role_name } = spec;
    let role_l = format!("{l}Role");
    if *setup {
        out.add(
            &role_l,
            "AWS::IAM::Role",
            json!({
                "RoleName": role_name,
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Effect": "Allow",
                        "Principal": {"Service": "apigateway.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }],
                },
                "ManagedPolicyArns": [APIGW_LOGS_POLICY],
            }),
            deps,
        );
        out.add(
            l,
            "AWS::ApiGateway::Account",
            json!({"CloudWatchRoleArn": get_att(&role_l, "Arn")}),
            &[],
        );
        // One setting per account and region, serving every API there: it outlives the
        // stack, as the direct engine never undoes it either.
        out.deletion(&role_l, "Retain");
        out.deletion(l, "Retain");
    }
    let (role_arn, name) = if *setup {
        (get_att(&role_l, "Arn"), json!(role_name))
    } else {
        (Value::Null, Value::Null)
    };
    out.bind(
        "setup",
        l,
        "/Properties/CloudWatchRoleArn",
        Conv::Expect(role_arn),
    );
    out.bind(
        "role_name",
        &role_l,
        "/Properties/RoleName",
        Conv::Expect(name),
    );
}

fn map_api_stage(
    l: &str,
    spec: &ApiStageSpec,
    look: &Lookup<'_>,
    deps: &[String],
    out: &mut Out<'_>,
) {
    let ApiStageSpec {
        api_name,
        stage_name,
        deployment_hash,
        access_log_group_arn,
        access_log_format,
        throttle_rate,
        throttle_burst,
        tags,
    } = spec;
    let api = look.api(api_name).unwrap_or_default();
    let deployment = deployment_logical_id(&api, deployment_hash);
    out.add(
        l,
        "AWS::ApiGateway::Stage",
        json!({
            "RestApiId": r#ref(&api),
            "StageName": stage_name,
            "DeploymentId": r#ref(&deployment),
            "AccessLogSetting": {"DestinationArn": access_log_group_arn, "Format": access_log_format},
            "MethodSettings": [{
                "ResourcePath": "/*",
                "HttpMethod": "*",
                "ThrottlingRateLimit": throttle_rate,
                "ThrottlingBurstLimit": throttle_burst,
            }],
            "Tags": tag_list(tags),
        }),
        &without(deps, &api),
    );
    out.bind(
        "api_name",
        l,
        "/Properties/RestApiId",
        Conv::Expect(r#ref(&api)),
    );
    out.bind(
        "deployment_hash",
        l,
        "/Properties/DeploymentId",
        Conv::Expect(r#ref(&deployment)),
    );
    out.same(
        l,
        &[
            ("stage_name", "/Properties/StageName"),
            (
                "access_log_group_arn",
                "/Properties/AccessLogSetting/DestinationArn",
            ),
            ("access_log_format", "/Properties/AccessLogSetting/Format"),
            (
                "throttle_rate",
                "/Properties/MethodSettings/0/ThrottlingRateLimit",
            ),
            (
                "throttle_burst",
                "/Properties/MethodSettings/0/ThrottlingBurstLimit",
            ),
        ],
    );
    out.tags(l);
}

fn map_api_key(l: &str, spec: &ApiKeySpec, deps: &[String], out: &mut Out<'_>) {
    let ApiKeySpec {
        name,
        description,
        tags,
    } = spec;
    out.add(
        l,
        "AWS::ApiGateway::ApiKey",
        json!({"Name": name, "Description": description, "Enabled": true, "Tags": tag_list(tags)}),
        deps,
    );
    out.same(
        l,
        &[
            ("name", "/Properties/Name"),
            ("description", "/Properties/Description"),
        ],
    );
    out.tags(l);
}

/// The usage plan and the key it admits.
fn map_usage_plan(l: &str, spec: &UsagePlanSpec, look: &Lookup<'_>, out: &mut Out<'_>) {
    let UsagePlanSpec {
        name,
        api_name,
        stage_name,
        key_name,
        rate_limit,
        burst_limit,
        quota_limit,
        quota_period,
        tags,
    } = spec;
    let api = look.api(api_name).unwrap_or_default();
    let stage = look.stage(api_name, stage_name).unwrap_or_default();
    let key = look.key(key_name).unwrap_or_default();
    out.add(
        l,
        "AWS::ApiGateway::UsagePlan",
        json!({
            "UsagePlanName": name,
            "ApiStages": [{"ApiId": r#ref(&api), "Stage": r#ref(&stage)}],
            "Throttle": {"RateLimit": rate_limit, "BurstLimit": burst_limit},
            "Quota": {"Limit": quota_limit, "Period": quota_period},
            "Tags": tag_list(tags),
        }),
        &[],
    );
    let key_l = format!("{l}Key");
    out.add(
        &key_l,
        "AWS::ApiGateway::UsagePlanKey",
        json!({"KeyId": r#ref(&key), "KeyType": "API_KEY", "UsagePlanId": r#ref(l)}),
        &[],
    );
    out.bind(
        "api_name",
        l,
        "/Properties/ApiStages/0/ApiId",
        Conv::Expect(r#ref(&api)),
    );
    out.bind(
        "stage_name",
        l,
        "/Properties/ApiStages/0/Stage",
        Conv::Expect(r#ref(&stage)),
    );
    out.bind(
        "key_name",
        &key_l,
        "/Properties/KeyId",
        Conv::Expect(r#ref(&key)),
    );
    out.same(
        l,
        &[
            ("name", "/Properties/UsagePlanName"),
            ("rate_limit", "/Properties/Throttle/RateLimit"),
            ("burst_limit", "/Properties/Throttle/BurstLimit"),
            ("quota_limit", "/Properties/Quota/Limit"),
            ("quota_period", "/Properties/Quota/Period"),
        ],
    );
    out.tags(l);
}

fn map_lambda_permission(
    l: &str,
    spec: &LambdaPermissionSpec,
    look: &Lookup<'_>,
    deps: &[String],
    out: &mut Out<'_>,
) {
    let LambdaPermissionSpec {
        function_name,
        qualifier,
        statement_id: _,
        principal,
        api_name,
        source_arn_suffix,
    } = spec;
    let api = look.api(api_name).unwrap_or_default();
    let target = look
        .alias(function_name)
        .map(|a| r#ref(&a))
        .unwrap_or_else(|| {
            json!(format!(
                "arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}:{qualifier}"
            ))
        });
    let source = json!({"Fn::Sub": format!(
        "arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{{api}}}/{source_arn_suffix}"
    )});
    out.add(
        l,
        "AWS::Lambda::Permission",
        json!({
            "Action": "lambda:InvokeFunction",
            "FunctionName": target,
            "Principal": principal,
            "SourceArn": source,
        }),
        &without(deps, &api),
    );
    out.omit(
        "statement_id",
        "CloudFormation names the policy statement after the resource",
    );
    out.same(l, &[("principal", "/Properties/Principal")]);
    for (field, pointer, value) in [
        ("function_name", "/Properties/FunctionName", target.clone()),
        ("qualifier", "/Properties/FunctionName", target),
        ("api_name", "/Properties/SourceArn", source.clone()),
        ("source_arn_suffix", "/Properties/SourceArn", source),
    ] {
        out.bind(field, l, pointer, Conv::Expect(value));
    }
}

fn map_seed(spec: &SeedSpec, out: &mut Out<'_>) {
    let SeedSpec {
        name: _,
        table_name: _,
        function_name: _,
        alias: _,
        artifacts_bucket: _,
        invoices: _,
        customers: _,
        invoke: _,
    } = spec;
    // Not a resource but an action after one: CloudFormation would need a custom resource
    // backed by yet another function to invoke insert-mock-data.
    const WHY: &str = "a template cannot invoke a function; the CloudFormation engine does not seed (the direct engine does)";
    for field in [
        "name",
        "table_name",
        "function_name",
        "alias",
        "artifacts_bucket",
        "invoices",
        "customers",
        "invoke",
    ] {
        out.omit(field, WHY);
    }
}

/// The REST API: the API, one resource per path, one method per route (and CORS
/// preflight), the parameters validator, the gateway responses, and the deployment whose
/// logical id carries the definition's hash.
fn map_rest_api(l: &str, spec: &RestApiSpec, deps: &[String], out: &mut Out<'_>) {
    let RestApiSpec {
        name,
        description,
        endpoint_type,
        routes,
        cors_origin,
        gateway_responses,
        tags,
    } = spec;
    out.add(
        l,
        "AWS::ApiGateway::RestApi",
        json!({
            "Name": name,
            "Description": description,
            "EndpointConfiguration": {"Types": [endpoint_type]},
            "ApiKeySourceType": "HEADER",
            "Tags": tag_list(tags),
        }),
        deps,
    );
    out.same(
        l,
        &[
            ("name", "/Properties/Name"),
            ("description", "/Properties/Description"),
            ("endpoint_type", "/Properties/EndpointConfiguration/Types/0"),
        ],
    );
    out.tags(l);
    let (paths, methods) = map_methods(l, spec, out);
    bind_routes(l, routes, out);
    for path in &paths {
        let ml = method_logical(l, "OPTIONS", path);
        out.bind(
            "cors_origin",
            &ml,
            "/Properties/Integration/IntegrationResponses/0/ResponseParameters/method.response.header.Access-Control-Allow-Origin",
            Conv::Expect(cors_origin.as_ref().map_or(Value::Null, |o| json!(format!("'{o}'")))),
        );
    }
    let responses = map_gateway_responses(l, gateway_responses, out);
    // A deployment freezes methods and gateway responses: it must come after all of them,
    // and its logical id changes with their hash, so any change deploys anew.
    let hash = spec.deployment_hash();
    let mut after = methods;
    after.extend(responses);
    out.add(
        &deployment_logical_id(l, &hash),
        "AWS::ApiGateway::Deployment",
        json!({
            "RestApiId": r#ref(l),
            "Description": format!("{DEPLOYMENT_HASH_PREFIX}{hash}"),
        }),
        &after,
    );
}

/// The parameters validator's logical id.
fn validator_logical(api_logical: &str) -> String {
    format!("{api_logical}ParamsValidator")
}

/// Query parameters as a method's `RequestParameters`.
fn request_parameters(query_params: &BTreeMap<String, bool>) -> Value {
    query_params
        .iter()
        .map(|(n, req)| (format!("{QUERY}{n}"), json!(req)))
        .collect::<Map<_, _>>()
        .into()
}

/// The validator, a resource per path and a method per route (the direct engine's desired
/// routes, CORS preflights included): the paths and the methods' logical ids.
fn map_methods(l: &str, spec: &RestApiSpec, out: &mut Out<'_>) -> (Vec<String>, Vec<String>) {
    let wanted = rest_api::desired_routes(spec);
    let validator_l = validator_logical(l);
    if wanted.values().any(|r| r.validate_params) {
        out.add(
            &validator_l,
            "AWS::ApiGateway::RequestValidator",
            json!({
                "Name": PARAMS_VALIDATOR,
                "RestApiId": r#ref(l),
                "ValidateRequestParameters": true,
                "ValidateRequestBody": false,
            }),
            &[],
        );
    }
    let mut paths: Vec<String> = wanted
        .keys()
        .map(|k| k.split_once(' ').map_or("/", |(_, p)| p).to_string())
        .collect();
    paths.sort();
    paths.dedup();
    for path in &paths {
        out.add(
            &path_logical(l, path),
            "AWS::ApiGateway::Resource",
            json!({
                "RestApiId": r#ref(l),
                "ParentId": get_att(l, "RootResourceId"),
                "PathPart": path.trim_start_matches('/'),
            }),
            &[],
        );
    }
    let mut methods = Vec::new();
    for (key, state) in &wanted {
        let (method, path) = key.split_once(' ').unwrap_or((key, "/"));
        let ml = method_logical(l, method, path);
        let mut p = json!({
            "RestApiId": r#ref(l),
            "ResourceId": r#ref(&path_logical(l, path)),
            "HttpMethod": method,
            "AuthorizationType": "NONE",
            "ApiKeyRequired": state.api_key_required,
        });
        if !state.query_params.is_empty() {
            p["RequestParameters"] = request_parameters(&state.query_params);
        }
        if state.validate_params {
            p["RequestValidatorId"] = r#ref(&validator_l);
        }
        integration(&mut p, &state.target, spec, path);
        out.add(&ml, "AWS::ApiGateway::Method", p, &[]);
        methods.push(ml);
    }
    (paths, methods)
}

/// A method's integration: a Lambda proxy, or a CORS preflight API Gateway answers itself.
fn integration(p: &mut Value, target: &RouteTarget, spec: &RestApiSpec, path: &str) {
    match target {
        RouteTarget::AwsProxy { uri } => {
            p["Integration"] = json!({
                "Type": "AWS_PROXY",
                // Lambda is always invoked with POST, whatever the client's method.
                "IntegrationHttpMethod": "POST",
                "Uri": uri,
            });
        }
        RouteTarget::Mock { allow_origin } => {
            let origin = allow_origin.clone().unwrap_or_else(|| "*".into());
            p["Integration"] = json!({
                "Type": "MOCK",
                "RequestTemplates": {"application/json": MOCK_TEMPLATE},
                "IntegrationResponses": [{
                    "StatusCode": "200",
                    "ResponseParameters": {
                        ALLOW_ORIGIN: format!("'{origin}'"),
                        ALLOW_HEADERS: CORS_ALLOWED_HEADERS,
                        ALLOW_METHODS: format!("'{}'", rest_api::methods_of(spec, path)),
                    },
                }],
            });
            p["MethodResponses"] = json!([{
                "StatusCode": "200",
                "ResponseParameters": {ALLOW_ORIGIN: false, ALLOW_HEADERS: false, ALLOW_METHODS: false},
            }]);
        }
        RouteTarget::Other { .. } => unreachable!("desired routes are proxies or preflights"),
    }
}

/// Where each route's fields landed in its method.
fn bind_routes(l: &str, routes: &[RouteSpec], out: &mut Out<'_>) {
    let validator_l = validator_logical(l);
    for RouteSpec {
        path,
        method,
        api_key_required,
        query_params,
        validate_params,
        function_name: _,
        function_arn: _,
        integration_uri,
    } in routes
    {
        let ml = method_logical(l, method, path);
        let params = if query_params.is_empty() {
            Value::Null
        } else {
            request_parameters(query_params)
        };
        let validator = if *validate_params {
            r#ref(&validator_l)
        } else {
            Value::Null
        };
        // The function name and ARN are the integration URI's parts.
        for (pointer, value) in [
            ("/Properties/ApiKeyRequired", json!(api_key_required)),
            ("/Properties/RequestParameters", params),
            ("/Properties/RequestValidatorId", validator),
            ("/Properties/Integration/Uri", json!(integration_uri)),
        ] {
            out.bind("routes", &ml, pointer, Conv::Expect(value));
        }
    }
}

/// The gateway responses: their logical ids.
fn map_gateway_responses(
    l: &str,
    gateway_responses: &[GatewayResponseSpec],
    out: &mut Out<'_>,
) -> Vec<String> {
    let mut responses = Vec::new();
    for GatewayResponseSpec {
        response_type,
        status_code,
        template,
        headers,
    } in gateway_responses
    {
        let rl = format!(
            "{l}Response{}",
            logical_id(&response_type.to_ascii_lowercase())
        );
        let mut p = json!({
            "RestApiId": r#ref(l),
            "ResponseType": response_type,
            "ResponseTemplates": {"application/json": template},
        });
        if !status_code.is_empty() {
            p["StatusCode"] = json!(status_code);
        }
        if !headers.is_empty() {
            p["ResponseParameters"] = json!(headers);
        }
        out.add(&rl, "AWS::ApiGateway::GatewayResponse", p.clone(), &[]);
        out.bind("gateway_responses", &rl, "/Properties", Conv::Expect(p));
        responses.push(rl);
    }
    responses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_ids_are_alphanumeric_camel_case() {
        assert_eq!(logical_id("s3_bucket.artifacts"), "S3BucketArtifacts");
        assert_eq!(logical_id("/list-invoices"), "ListInvoices");
        assert_eq!(
            logical_id("scalable_target.invoices_gsi_read"),
            "ScalableTargetInvoicesGsiRead"
        );
    }

    #[test]
    fn account_and_region_become_substitutions_once() {
        let mut v = json!({"a": "arn:aws:s3:::x-${AWS::AccountId}", "b": {"Fn::Sub": "${AWS::Region}"}, "c": "plain"});
        substitute(&mut v);
        assert_eq!(
            v["a"],
            json!({"Fn::Sub": "arn:aws:s3:::x-${AWS::AccountId}"})
        );
        assert_eq!(v["b"], json!({"Fn::Sub": "${AWS::Region}"}));
        assert_eq!(v["c"], json!("plain"));
    }

    #[test]
    fn tags_carry_the_cloudformation_engine_marker() {
        let t = tag_list(&BTreeMap::from([
            ("managed-by".to_string(), "xtask".to_string()),
            ("app".to_string(), "a".to_string()),
        ]));
        assert_eq!(
            t,
            json!([{"Key": "app", "Value": "a"}, {"Key": "managed-by", "Value": "xtask-cloudformation"}])
        );
    }
}
