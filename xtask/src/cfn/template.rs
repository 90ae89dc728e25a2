//! Template synthesis: the stack model (`stacks::invoice_app`) as one CloudFormation template.
//!
//! There is no second description of the app: [`synth`] walks the same `Vec<Resource>` the
//! direct engine deploys, with one exhaustive `match` over [`Spec`] and every spec struct
//! destructured without `..`, so a new kind or a new field does not compile until it has a
//! CloudFormation form here. Each field is recorded as a [`Binding`] (where it landed in the
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

/// The one mapping from the stack model to CloudFormation.
fn map(r: &Resource, look: &Lookup<'_>, out: &mut Out<'_>) {
    let l = logical_id(&r.id);
    let deps = look.depends(r);
    match &r.spec {
        Spec::Bucket(BucketSpec {
            name,
            versioning,
            encryption,
            block_public_access,
            owner_enforced,
            noncurrent_version_expiry_days,
            tls_only,
            tags,
        }) => {
            let mut p = json!({
                "BucketName": name,
                "VersioningConfiguration": {"Status": if *versioning { "Enabled" } else { "Suspended" }},
                "BucketEncryption": {"ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": encryption}}
                ]},
                "OwnershipControls": {"Rules": [{"ObjectOwnership":
                    if *owner_enforced { "BucketOwnerEnforced" } else { "BucketOwnerPreferred" }}]},
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
            out.add(&l, "AWS::S3::Bucket", p, &deps);
            // Destroy purges versions first, then deletes: as the direct engine does.
            out.set(&l, "DeletionPolicy", json!("Delete"));
            out.set(&l, "UpdateReplacePolicy", json!("Delete"));
            out.bind("name", &l, "/Properties/BucketName", Conv::Same);
            out.bind(
                "versioning",
                &l,
                "/Properties/VersioningConfiguration/Status",
                Conv::Enabled,
            );
            out.bind(
                "encryption",
                &l,
                "/Properties/BucketEncryption/ServerSideEncryptionConfiguration/0/ServerSideEncryptionByDefault/SSEAlgorithm",
                Conv::Same,
            );
            out.bind(
                "block_public_access",
                &l,
                "/Properties/PublicAccessBlockConfiguration",
                Conv::Expect(pab),
            );
            out.bind(
                "owner_enforced",
                &l,
                "/Properties/OwnershipControls/Rules/0/ObjectOwnership",
                Conv::Expect(json!(if *owner_enforced {
                    "BucketOwnerEnforced"
                } else {
                    "BucketOwnerPreferred"
                })),
            );
            out.bind(
                "noncurrent_version_expiry_days",
                &l,
                "/Properties/LifecycleConfiguration/Rules/0/NoncurrentVersionExpiration/NoncurrentDays",
                Conv::Same,
            );
            let policy_l = format!("{l}Policy");
            let spec = BucketSpec {
                name: name.clone(),
                versioning: *versioning,
                encryption: *encryption,
                block_public_access: *block_public_access,
                owner_enforced: *owner_enforced,
                noncurrent_version_expiry_days: *noncurrent_version_expiry_days,
                tls_only: *tls_only,
                tags: tags.clone(),
            };
            let policy = crate::providers::s3_bucket::desired_policy(&spec, REGION);
            if let Some(doc) = &policy {
                out.add(
                    &policy_l,
                    "AWS::S3::BucketPolicy",
                    json!({"Bucket": r#ref(&l), "PolicyDocument": doc}),
                    &[],
                );
            }
            out.bind(
                "tls_only",
                &policy_l,
                "/Properties/PolicyDocument",
                Conv::Expect(policy.unwrap_or(Value::Null)),
            );
            out.bind("tags", &l, "/Properties/Tags", Conv::Tags);
        }
        Spec::Table(TableSpec {
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
        }) => {
            let key = |k: &KeyAttr, t: &str| json!({"AttributeName": k.name, "KeyType": t});
            let mut attrs: BTreeMap<&str, &str> = BTreeMap::new();
            for k in std::iter::once(hash_key).chain(range_key.iter()).chain(
                gsis.iter()
                    .flat_map(|g| std::iter::once(&g.hash_key).chain(&g.range_key)),
            ) {
                attrs.insert(&k.name, k.attr_type.as_str());
            }
            let mut schema = vec![key(hash_key, "HASH")];
            if let Some(rk) = range_key {
                schema.push(key(rk, "RANGE"));
            }
            let throughput =
                |c: &Capacity| json!({"ReadCapacityUnits": c.read, "WriteCapacityUnits": c.write});
            let gsi_list: Vec<Value> = gsis
                .iter()
                .map(
                    |GsiSpec {
                         name,
                         hash_key,
                         range_key,
                         projection_all,
                         capacity,
                     }| {
                        let mut ks = vec![key(hash_key, "HASH")];
                        if let Some(rk) = range_key {
                            ks.push(key(rk, "RANGE"));
                        }
                        let mut g = json!({
                            "IndexName": name,
                            "KeySchema": ks,
                            "Projection": {"ProjectionType": if *projection_all { "ALL" } else { "KEYS_ONLY" }},
                        });
                        if let Some(c) = capacity {
                            g["ProvisionedThroughput"] = throughput(c);
                        }
                        g
                    },
                )
                .collect();
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
                "KeySchema": schema,
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
            out.add(&l, "AWS::DynamoDB::Table", p, &deps);
            out.set(&l, "DeletionPolicy", json!("Delete"));
            out.set(&l, "UpdateReplacePolicy", json!("Delete"));
            out.bind("name", &l, "/Properties/TableName", Conv::Same);
            out.bind(
                "hash_key",
                &l,
                "/Properties/KeySchema/0",
                Conv::Expect(key(hash_key, "HASH")),
            );
            out.bind(
                "range_key",
                &l,
                "/Properties/KeySchema/1",
                Conv::Expect(range_key.as_ref().map_or(Value::Null, |k| key(k, "RANGE"))),
            );
            out.bind(
                "billing",
                &l,
                "/Properties/BillingMode",
                Conv::Expect(json!(mode)),
            );
            out.bind(
                "billing",
                &l,
                "/Properties/ProvisionedThroughput",
                Conv::Expect(provisioned.unwrap_or(Value::Null)),
            );
            out.bind(
                "gsis",
                &l,
                "/Properties/GlobalSecondaryIndexes",
                Conv::Expect(if gsi_list.is_empty() {
                    Value::Null
                } else {
                    json!(gsi_list)
                }),
            );
            out.bind(
                "stream",
                &l,
                "/Properties/StreamSpecification/StreamViewType",
                Conv::Same,
            );
            out.bind(
                "sse_kms",
                &l,
                "/Properties/SSESpecification",
                Conv::Expect(sse),
            );
            out.bind(
                "point_in_time_recovery",
                &l,
                "/Properties/PointInTimeRecoverySpecification/PointInTimeRecoveryEnabled",
                Conv::Same,
            );
            out.bind(
                "deletion_protection",
                &l,
                "/Properties/DeletionProtectionEnabled",
                Conv::Same,
            );
            out.bind("tags", &l, "/Properties/Tags", Conv::Tags);
        }
        Spec::ScalableTarget(ScalableTargetSpec {
            resource_id,
            dimension,
            min,
            max,
        }) => {
            out.add(
                &l,
                "AWS::ApplicationAutoScaling::ScalableTarget",
                json!({
                    "ServiceNamespace": "dynamodb",
                    "ResourceId": resource_id,
                    "ScalableDimension": dimension,
                    "MinCapacity": min,
                    "MaxCapacity": max,
                }),
                &deps,
            );
            out.bind("resource_id", &l, "/Properties/ResourceId", Conv::Same);
            out.bind("dimension", &l, "/Properties/ScalableDimension", Conv::Same);
            out.bind("min", &l, "/Properties/MinCapacity", Conv::Same);
            out.bind("max", &l, "/Properties/MaxCapacity", Conv::Same);
        }
        Spec::ScalingPolicy(ScalingPolicySpec {
            name,
            resource_id,
            dimension,
            metric,
            target_value,
            scale_in_cooldown_secs,
            scale_out_cooldown_secs,
        }) => {
            // The target is named by resource id and dimension (not `ScalingTargetId`), as
            // the direct engine does; the dependency orders them.
            out.add(
                &l,
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
                &deps,
            );
            let t = "/Properties/TargetTrackingScalingPolicyConfiguration";
            out.bind("name", &l, "/Properties/PolicyName", Conv::Same);
            out.bind("resource_id", &l, "/Properties/ResourceId", Conv::Same);
            out.bind("dimension", &l, "/Properties/ScalableDimension", Conv::Same);
            out.bind(
                "metric",
                &l,
                &format!("{t}/PredefinedMetricSpecification/PredefinedMetricType"),
                Conv::Same,
            );
            out.bind("target_value", &l, &format!("{t}/TargetValue"), Conv::Same);
            out.bind(
                "scale_in_cooldown_secs",
                &l,
                &format!("{t}/ScaleInCooldown"),
                Conv::Same,
            );
            out.bind(
                "scale_out_cooldown_secs",
                &l,
                &format!("{t}/ScaleOutCooldown"),
                Conv::Same,
            );
        }
        Spec::Role(spec) => {
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
                &l,
                "AWS::IAM::Role",
                json!({
                    "RoleName": name,
                    "AssumeRolePolicyDocument": spec.trust_policy(),
                    "ManagedPolicyArns": managed_policy_arns,
                    "Policies": [{"PolicyName": inline_policy_name, "PolicyDocument": inline_policy}],
                    "Tags": tag_list(tags),
                }),
                &deps,
            );
            out.bind("name", &l, "/Properties/RoleName", Conv::Same);
            out.bind(
                "service",
                &l,
                "/Properties/AssumeRolePolicyDocument/Statement/0/Principal/Service",
                Conv::Same,
            );
            out.bind(
                "managed_policy_arns",
                &l,
                "/Properties/ManagedPolicyArns",
                Conv::Same,
            );
            out.bind(
                "inline_policy_name",
                &l,
                "/Properties/Policies/0/PolicyName",
                Conv::Same,
            );
            out.bind(
                "inline_policy",
                &l,
                "/Properties/Policies/0/PolicyDocument",
                Conv::Same,
            );
            out.bind("tags", &l, "/Properties/Tags", Conv::Tags);
        }
        Spec::LogGroup(LogGroupSpec {
            name,
            retention_days,
            tags,
        }) => {
            out.add(
                &l,
                "AWS::Logs::LogGroup",
                json!({"LogGroupName": name, "RetentionInDays": retention_days, "Tags": tag_list(tags)}),
                &deps,
            );
            out.set(&l, "DeletionPolicy", json!("Delete"));
            out.set(&l, "UpdateReplacePolicy", json!("Delete"));
            out.bind("name", &l, "/Properties/LogGroupName", Conv::Same);
            out.bind(
                "retention_days",
                &l,
                "/Properties/RetentionInDays",
                Conv::Same,
            );
            out.bind("tags", &l, "/Properties/Tags", Conv::Tags);
        }
        Spec::Object(ObjectSpec {
            bucket: _,
            key: _,
            source: _,
            sha256_b64: _,
        }) => {
            const WHY: &str = "the zip is uploaded by xtask before the change set (`synth --upload`, `apply --engine cloudformation`); the function's Code names its bucket and key";
            for field in ["bucket", "key", "source", "sha256_b64"] {
                out.omit(field, WHY);
            }
        }
        Spec::Function(FunctionSpec {
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
            code_sha256_hex,
            code_sha256_b64,
            alias,
            keep_versions: _,
            tags,
        }) => {
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
            // A new version whenever code or configuration changes, as the direct engine
            // publishes one: the hash of both is in the version's logical id.
            let version_hash = {
                use sha2::{Digest, Sha256};
                hex::encode(Sha256::digest(p.to_string().as_bytes()))
            };
            out.add(&l, "AWS::Lambda::Function", p, &deps);
            let version_l = format!("{l}Version{}", &version_hash[..12]);
            out.add(
                &version_l,
                "AWS::Lambda::Version",
                json!({
                    "FunctionName": r#ref(&l),
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
                    "FunctionName": r#ref(&l),
                    "FunctionVersion": get_att(&version_l, "Version"),
                    "Name": alias,
                }),
                &[],
            );
            out.bind("name", &l, "/Properties/FunctionName", Conv::Same);
            out.bind("role_arn", &l, "/Properties/Role", Conv::Same);
            out.bind("runtime", &l, "/Properties/Runtime", Conv::Same);
            out.bind("handler", &l, "/Properties/Handler", Conv::Same);
            out.bind(
                "architecture",
                &l,
                "/Properties/Architectures/0",
                Conv::Same,
            );
            out.bind("memory_mb", &l, "/Properties/MemorySize", Conv::Same);
            out.bind("timeout_secs", &l, "/Properties/Timeout", Conv::Same);
            out.bind(
                "environment",
                &l,
                "/Properties/Environment/Variables",
                Conv::Same,
            );
            out.bind("code_bucket", &l, "/Properties/Code/S3Bucket", Conv::Same);
            out.bind("code_key", &l, "/Properties/Code/S3Key", Conv::Same);
            out.bind(
                "code_sha256_hex",
                &version_l,
                "/Properties/Description",
                Conv::Expect(json!(format!("code sha256 {code_sha256_hex}"))),
            );
            out.bind(
                "code_sha256_b64",
                &version_l,
                "/Properties/CodeSha256",
                Conv::Same,
            );
            out.bind("alias", &alias_l, "/Properties/Name", Conv::Same);
            out.omit(
                "keep_versions",
                "CloudFormation keeps the version the alias points at and deletes the one it replaced",
            );
            out.bind("tags", &l, "/Properties/Tags", Conv::Tags);
        }
        Spec::EventSourceMapping(EventSourceMappingSpec {
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
        }) => {
            let stream = look
                .table(table_name)
                .map(|t| get_att(&t, "StreamArn"))
                .unwrap_or(Value::Null);
            let target = look
                .alias(function_name)
                .map(|a| r#ref(&a))
                .unwrap_or(Value::Null);
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
                p["FunctionResponseTypes"] = json!(["ReportBatchItemFailures"]);
            }
            out.add(&l, "AWS::Lambda::EventSourceMapping", p, &deps);
            out.omit("name", "a display name; mappings have none in AWS");
            out.omit(
                "stream_view_type",
                "the table's view type; in the template the mapping follows the table's StreamArn",
            );
            out.bind(
                "table_name",
                &l,
                "/Properties/EventSourceArn",
                Conv::Expect(stream),
            );
            out.bind(
                "function_name",
                &l,
                "/Properties/FunctionName",
                Conv::Expect(target.clone()),
            );
            out.bind(
                "alias",
                &l,
                "/Properties/FunctionName",
                Conv::Expect(target),
            );
            out.bind(
                "starting_position",
                &l,
                "/Properties/StartingPosition",
                Conv::Same,
            );
            out.bind("batch_size", &l, "/Properties/BatchSize", Conv::Same);
            out.bind(
                "batching_window_secs",
                &l,
                "/Properties/MaximumBatchingWindowInSeconds",
                Conv::Same,
            );
            out.bind(
                "bisect_on_error",
                &l,
                "/Properties/BisectBatchOnFunctionError",
                Conv::Same,
            );
            out.bind(
                "max_retries",
                &l,
                "/Properties/MaximumRetryAttempts",
                Conv::Same,
            );
            out.bind(
                "report_batch_item_failures",
                &l,
                "/Properties/FunctionResponseTypes",
                Conv::Expect(if *report_batch_item_failures {
                    json!(["ReportBatchItemFailures"])
                } else {
                    Value::Null
                }),
            );
        }
        Spec::ApiAccount(ApiAccountSpec { setup, role_name }) => {
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
                    &deps,
                );
                out.add(
                    &l,
                    "AWS::ApiGateway::Account",
                    json!({"CloudWatchRoleArn": get_att(&role_l, "Arn")}),
                    &[],
                );
                // One setting per account and region, serving every API there: it outlives
                // the stack, as the direct engine never undoes it either.
                for x in [&role_l, &l] {
                    out.set(x, "DeletionPolicy", json!("Retain"));
                    out.set(x, "UpdateReplacePolicy", json!("Retain"));
                }
            }
            out.bind(
                "setup",
                &l,
                "/Properties/CloudWatchRoleArn",
                Conv::Expect(if *setup {
                    get_att(&role_l, "Arn")
                } else {
                    Value::Null
                }),
            );
            out.bind(
                "role_name",
                &role_l,
                "/Properties/RoleName",
                Conv::Expect(if *setup {
                    json!(role_name)
                } else {
                    Value::Null
                }),
            );
        }
        Spec::RestApi(spec) => map_rest_api(&l, spec, &deps, out),
        Spec::ApiStage(ApiStageSpec {
            api_name,
            stage_name,
            deployment_hash,
            access_log_group_arn,
            access_log_format,
            throttle_rate,
            throttle_burst,
            tags,
        }) => {
            let api = look.api(api_name).unwrap_or_default();
            let deployment = deployment_logical_id(&api, deployment_hash);
            out.add(
                &l,
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
                &deps
                    .iter()
                    .filter(|d| **d != api)
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            out.bind(
                "api_name",
                &l,
                "/Properties/RestApiId",
                Conv::Expect(r#ref(&api)),
            );
            out.bind("stage_name", &l, "/Properties/StageName", Conv::Same);
            out.bind(
                "deployment_hash",
                &l,
                "/Properties/DeploymentId",
                Conv::Expect(r#ref(&deployment)),
            );
            out.bind(
                "access_log_group_arn",
                &l,
                "/Properties/AccessLogSetting/DestinationArn",
                Conv::Same,
            );
            out.bind(
                "access_log_format",
                &l,
                "/Properties/AccessLogSetting/Format",
                Conv::Same,
            );
            out.bind(
                "throttle_rate",
                &l,
                "/Properties/MethodSettings/0/ThrottlingRateLimit",
                Conv::Same,
            );
            out.bind(
                "throttle_burst",
                &l,
                "/Properties/MethodSettings/0/ThrottlingBurstLimit",
                Conv::Same,
            );
            out.bind("tags", &l, "/Properties/Tags", Conv::Tags);
        }
        Spec::ApiKey(ApiKeySpec {
            name,
            description,
            tags,
        }) => {
            out.add(
                &l,
                "AWS::ApiGateway::ApiKey",
                json!({"Name": name, "Description": description, "Enabled": true, "Tags": tag_list(tags)}),
                &deps,
            );
            out.bind("name", &l, "/Properties/Name", Conv::Same);
            out.bind("description", &l, "/Properties/Description", Conv::Same);
            out.bind("tags", &l, "/Properties/Tags", Conv::Tags);
        }
        Spec::UsagePlan(UsagePlanSpec {
            name,
            api_name,
            stage_name,
            key_name,
            rate_limit,
            burst_limit,
            quota_limit,
            quota_period,
            tags,
        }) => {
            let api = look.api(api_name).unwrap_or_default();
            let stage = look.stage(api_name, stage_name).unwrap_or_default();
            let key = look.key(key_name).unwrap_or_default();
            out.add(
                &l,
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
                json!({"KeyId": r#ref(&key), "KeyType": "API_KEY", "UsagePlanId": r#ref(&l)}),
                &[],
            );
            out.bind("name", &l, "/Properties/UsagePlanName", Conv::Same);
            out.bind(
                "api_name",
                &l,
                "/Properties/ApiStages/0/ApiId",
                Conv::Expect(r#ref(&api)),
            );
            out.bind(
                "stage_name",
                &l,
                "/Properties/ApiStages/0/Stage",
                Conv::Expect(r#ref(&stage)),
            );
            out.bind(
                "key_name",
                &key_l,
                "/Properties/KeyId",
                Conv::Expect(r#ref(&key)),
            );
            out.bind(
                "rate_limit",
                &l,
                "/Properties/Throttle/RateLimit",
                Conv::Same,
            );
            out.bind(
                "burst_limit",
                &l,
                "/Properties/Throttle/BurstLimit",
                Conv::Same,
            );
            out.bind("quota_limit", &l, "/Properties/Quota/Limit", Conv::Same);
            out.bind("quota_period", &l, "/Properties/Quota/Period", Conv::Same);
            out.bind("tags", &l, "/Properties/Tags", Conv::Tags);
        }
        Spec::LambdaPermission(LambdaPermissionSpec {
            function_name,
            qualifier,
            statement_id: _,
            principal,
            api_name,
            source_arn_suffix,
        }) => {
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
                &l,
                "AWS::Lambda::Permission",
                json!({
                    "Action": "lambda:InvokeFunction",
                    "FunctionName": target,
                    "Principal": principal,
                    "SourceArn": source,
                }),
                &deps
                    .iter()
                    .filter(|d| **d != api)
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            out.bind(
                "function_name",
                &l,
                "/Properties/FunctionName",
                Conv::Expect(target.clone()),
            );
            out.bind(
                "qualifier",
                &l,
                "/Properties/FunctionName",
                Conv::Expect(target),
            );
            out.omit(
                "statement_id",
                "CloudFormation names the policy statement after the resource",
            );
            out.bind("principal", &l, "/Properties/Principal", Conv::Same);
            out.bind(
                "api_name",
                &l,
                "/Properties/SourceArn",
                Conv::Expect(source.clone()),
            );
            out.bind(
                "source_arn_suffix",
                &l,
                "/Properties/SourceArn",
                Conv::Expect(source),
            );
        }
        Spec::Seed(SeedSpec {
            name: _,
            table_name: _,
            function_name: _,
            alias: _,
            artifacts_bucket: _,
            invoices: _,
            customers: _,
            invoke: _,
        }) => {
            // Not a resource but an action after one: CloudFormation would need a custom
            // resource backed by yet another function to invoke insert-mock-data.
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
    out.bind("name", l, "/Properties/Name", Conv::Same);
    out.bind("description", l, "/Properties/Description", Conv::Same);
    out.bind(
        "endpoint_type",
        l,
        "/Properties/EndpointConfiguration/Types/0",
        Conv::Same,
    );
    out.bind("tags", l, "/Properties/Tags", Conv::Tags);

    let wanted = rest_api::desired_routes(spec);
    let validator_l = format!("{l}ParamsValidator");
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
    let mut paths: Vec<&str> = wanted
        .keys()
        .map(|k| k.split_once(' ').map_or("/", |(_, p)| p))
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
            p["RequestParameters"] = state
                .query_params
                .iter()
                .map(|(n, req)| (format!("{QUERY}{n}"), json!(req)))
                .collect::<Map<_, _>>()
                .into();
        }
        if state.validate_params {
            p["RequestValidatorId"] = r#ref(&validator_l);
        }
        match &state.target {
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
        out.add(&ml, "AWS::ApiGateway::Method", p, &[]);
        methods.push(ml);
    }
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
        out.bind(
            "routes",
            &ml,
            "/Properties/ApiKeyRequired",
            Conv::Expect(json!(api_key_required)),
        );
        out.bind(
            "routes",
            &ml,
            "/Properties/RequestParameters",
            Conv::Expect(if query_params.is_empty() {
                Value::Null
            } else {
                query_params
                    .iter()
                    .map(|(n, req)| (format!("{QUERY}{n}"), json!(req)))
                    .collect::<Map<_, _>>()
                    .into()
            }),
        );
        out.bind(
            "routes",
            &ml,
            "/Properties/RequestValidatorId",
            Conv::Expect(if *validate_params {
                r#ref(&validator_l)
            } else {
                Value::Null
            }),
        );
        // The function name and ARN are the integration URI's parts.
        out.bind(
            "routes",
            &ml,
            "/Properties/Integration/Uri",
            Conv::Expect(json!(integration_uri)),
        );
    }
    for path in &paths {
        let ml = method_logical(l, "OPTIONS", path);
        out.bind(
            "cors_origin",
            &ml,
            "/Properties/Integration/IntegrationResponses/0/ResponseParameters/method.response.header.Access-Control-Allow-Origin",
            Conv::Expect(cors_origin.as_ref().map_or(Value::Null, |o| json!(format!("'{o}'")))),
        );
    }
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
    // A deployment freezes methods and gateway responses: it must come after all of them,
    // and its logical id changes with their hash, so any change deploys anew.
    let hash = spec.deployment_hash();
    let dl = deployment_logical_id(l, &hash);
    let mut after = methods;
    after.extend(responses);
    out.add(
        &dl,
        "AWS::ApiGateway::Deployment",
        json!({
            "RestApiId": r#ref(l),
            "Description": format!("{DEPLOYMENT_HASH_PREFIX}{hash}"),
        }),
        &after,
    );
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
