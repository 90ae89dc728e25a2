//! The app's Lambda functions, each described once: what invokes it, what its policy grants
//! and which resource names its handler reads from the environment.
//!
//! Everything else about a function (its role, log group, artifact, alias, API route and
//! permission, stream trigger, seed step) is derived from its entry in [`APP_FUNCTIONS`], so
//! adding a function is one entry here plus its crate under `functions/` (and, for an API
//! route, its operation in `openapi/`; ARCHITECTURE.md lists the rest). The derived
//! constants ([`FUNCTIONS`], [`STREAM_FUNCTION`], [`SEED_FUNCTION`], [`ENDPOINTS`]) are
//! computed at compile time: a table with no stream consumer, or two seeders, does not build.

/// One function of the app; its crate under `functions/` has the same name.
#[derive(Debug, Clone, Copy)]
pub struct AppFunction {
    pub name: &'static str,
    pub trigger: Trigger,
    /// The statements of its inline policy, besides writing to its own log group.
    pub grants: &'static [Grant],
    /// The resource names its handler reads from the environment (besides `LOG_LEVEL`).
    pub env: &'static [EnvVar],
}

/// What invokes a function: every function has exactly one caller.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// A route of the REST API, through the function's alias.
    Api(Route),
    /// The invoices table's stream, through an event source mapping.
    InvoicesStream,
    /// The deployer's seed step, after an apply.
    Seed,
}

/// An HTTP endpoint: path, method and query parameters (name, required).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub path: &'static str,
    pub method: &'static str,
    pub query: &'static [(&'static str, bool)],
}

/// One statement of a function's inline policy: these actions on one resource.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    pub actions: &'static [&'static str],
    pub on: On,
}

/// The resource a [`Grant`] names; `Arns` turns it into the environment's ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    InvoicesTable,
    InvoicesGsi,
    /// Every stream the invoices table ever has.
    InvoicesStreams,
    ProcessedTable,
    /// The objects of the PDF bucket.
    PdfObjects,
    /// `*`: only for actions that accept no narrower resource.
    Any,
}

/// An environment variable naming one of the app's tables or buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvVar {
    InvoicesTable,
    ProcessedTable,
    PdfBucket,
}

impl EnvVar {
    /// The variable's name, as the handlers read it.
    pub fn name(self) -> &'static str {
        match self {
            EnvVar::InvoicesTable => "INVOICES_TABLE",
            EnvVar::ProcessedTable => "PROCESSED_TABLE",
            EnvVar::PdfBucket => "PDF_BUCKET",
        }
    }

    /// The variable's value in an environment.
    pub fn value(self, names: &crate::names::Names) -> String {
        match self {
            EnvVar::InvoicesTable => names.invoices_table(),
            EnvVar::ProcessedTable => names.processed_table(),
            EnvVar::PdfBucket => names.pdf_bucket(),
        }
    }
}

/// Query: the invoice is looked up by its hash key InvoiceID alone (whichever customer holds
/// it), so a retried request is answered from the stored item. PutItem covers both puts of the
/// insert's transaction (the invoice and its InvoiceID guard).
const INSERT_GRANTS: &[Grant] = &[Grant {
    actions: &["dynamodb:PutItem", "dynamodb:Query"],
    on: On::InvoicesTable,
}];

/// The app's functions, in the order their resources are listed.
pub const APP_FUNCTIONS: &[AppFunction] = &[
    AppFunction {
        name: "insert-invoice",
        trigger: Trigger::Api(Route {
            path: "/insert-invoice",
            method: "POST",
            query: &[],
        }),
        grants: INSERT_GRANTS,
        env: &[EnvVar::InvoicesTable],
    },
    AppFunction {
        name: "list-invoices",
        trigger: Trigger::Api(Route {
            path: "/list-invoices",
            method: "GET",
            query: &[("customerId", true), ("limit", false), ("pageToken", false)],
        }),
        grants: &[Grant {
            actions: &["dynamodb:Query"],
            on: On::InvoicesGsi,
        }],
        env: &[EnvVar::InvoicesTable],
    },
    AppFunction {
        name: "generate-pdf",
        trigger: Trigger::InvoicesStream,
        // The four stream actions are what the event source mapping's poller uses, under the
        // function's role. ListStreams accepts no resource but `*` (IAM ignores a statement
        // that names anything else for it), so it gets its own statement.
        grants: &[
            Grant {
                actions: &[
                    "dynamodb:DescribeStream",
                    "dynamodb:GetRecords",
                    "dynamodb:GetShardIterator",
                ],
                on: On::InvoicesStreams,
            },
            Grant {
                actions: &["dynamodb:ListStreams"],
                on: On::Any,
            },
            Grant {
                actions: &["s3:PutObject"],
                on: On::PdfObjects,
            },
            Grant {
                actions: &["dynamodb:PutItem"],
                on: On::ProcessedTable,
            },
        ],
        env: &[EnvVar::ProcessedTable, EnvVar::PdfBucket],
    },
    AppFunction {
        name: "download-pdf",
        // Takes `InvoiceID` or `invoiceId`, so neither alone is required.
        trigger: Trigger::Api(Route {
            path: "/download-invoice",
            method: "GET",
            query: &[("InvoiceID", false), ("invoiceId", false)],
        }),
        // The handler looks the invoice up too, to tell "no such invoice" (404) from "PDF not
        // ready yet" (409): GetItem on the processed table, Query by InvoiceID on the
        // invoices table. GetObject is what the presigned URL uses.
        grants: &[
            Grant {
                actions: &["dynamodb:GetItem"],
                on: On::ProcessedTable,
            },
            Grant {
                actions: &["dynamodb:Query"],
                on: On::InvoicesTable,
            },
            Grant {
                actions: &["s3:GetObject"],
                on: On::PdfObjects,
            },
        ],
        env: &[
            EnvVar::InvoicesTable,
            EnvVar::ProcessedTable,
            EnvVar::PdfBucket,
        ],
    },
    AppFunction {
        name: "insert-mock-data",
        trigger: Trigger::Seed,
        grants: INSERT_GRANTS,
        env: &[EnvVar::InvoicesTable],
    },
];

/// The function of a name, if the app has one.
pub fn get(name: &str) -> Option<&'static AppFunction> {
    let all: &'static [AppFunction] = APP_FUNCTIONS;
    all.iter().find(|f| f.name == name)
}

/// The names of the app's functions, in table order.
pub const FUNCTIONS: [&str; APP_FUNCTIONS.len()] = {
    let mut out = [""; APP_FUNCTIONS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = APP_FUNCTIONS[i].name;
        i += 1;
    }
    out
};

/// The name of the one function a trigger kind invokes; a compile error unless exactly one.
const fn the_one(stream: bool) -> &'static str {
    let mut found: Option<&'static str> = None;
    let mut i = 0;
    while i < APP_FUNCTIONS.len() {
        let hit = match APP_FUNCTIONS[i].trigger {
            Trigger::InvoicesStream => stream,
            Trigger::Seed => !stream,
            Trigger::Api(_) => false,
        };
        if hit {
            if found.is_some() {
                panic!("more than one function for a trigger that allows one");
            }
            found = Some(APP_FUNCTIONS[i].name);
        }
        i += 1;
    }
    match found {
        Some(name) => name,
        None => panic!("no function for a trigger that needs one"),
    }
}

/// The function the invoices table's stream triggers. One only: a DynamoDB stream serves
/// at most two readers, and the local stream runner feeds one.
pub const STREAM_FUNCTION: &str = the_one(true);
/// The function the seed step invokes (see its crate's `COUNT` and `CUSTOMERS`).
pub const SEED_FUNCTION: &str = the_one(false);

/// One HTTP endpoint of the app and the function behind it.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub path: &'static str,
    pub method: &'static str,
    pub function: &'static str,
    pub query: &'static [(&'static str, bool)],
}

const fn endpoint_count() -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < APP_FUNCTIONS.len() {
        if let Trigger::Api(_) = APP_FUNCTIONS[i].trigger {
            n += 1;
        }
        i += 1;
    }
    n
}

/// The app's HTTP contract as the functions implement it (see `functions/*/src/lib.rs`):
/// the routes of [`APP_FUNCTIONS`], in table order.
pub const ENDPOINTS: [Endpoint; endpoint_count()] = {
    let mut out = [Endpoint {
        path: "",
        method: "",
        function: "",
        query: &[],
    }; endpoint_count()];
    let (mut i, mut n) = (0, 0);
    while i < APP_FUNCTIONS.len() {
        if let Trigger::Api(r) = APP_FUNCTIONS[i].trigger {
            out[n] = Endpoint {
                path: r.path,
                method: r.method,
                function: APP_FUNCTIONS[i].name,
                query: r.query,
            };
            n += 1;
        }
        i += 1;
    }
    out
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lowercase_kebab() {
        let mut seen = std::collections::BTreeSet::new();
        for f in FUNCTIONS {
            assert!(seen.insert(f), "{f} twice");
            assert!(f.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{f}");
        }
    }

    #[test]
    fn derived_constants_follow_the_table() {
        assert_eq!(
            FUNCTIONS,
            [
                "insert-invoice",
                "list-invoices",
                "generate-pdf",
                "download-pdf",
                "insert-mock-data",
            ]
        );
        assert_eq!(STREAM_FUNCTION, "generate-pdf");
        assert_eq!(SEED_FUNCTION, "insert-mock-data");
        let routes: Vec<_> = ENDPOINTS
            .iter()
            .map(|e| (e.method, e.path, e.function))
            .collect();
        assert_eq!(
            routes,
            [
                ("POST", "/insert-invoice", "insert-invoice"),
                ("GET", "/list-invoices", "list-invoices"),
                ("GET", "/download-invoice", "download-pdf"),
            ]
        );
        assert!(get("generate-pdf").is_some());
        assert!(get("unknown").is_none());
    }
}
