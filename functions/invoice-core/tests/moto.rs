//! The DynamoDB and S3 stores against a real moto server (the local AWS emulator).
//!
//! Each test starts its own `python3 -m moto.server` on a free port and kills it when done, so
//! tests run in parallel without sharing state. These catch what the in-memory fakes cannot:
//! key schema and GSI names, condition expressions, attribute names, pagination keys and
//! presigned URLs that actually download.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use invoice_core::dynamo::{DynamoInvoiceStore, DynamoProcessedStore};
use invoice_core::model::{CUSTOMER_INDEX, GUARD_OWNER, INVOICE_ID_GUARD};
use invoice_core::ops::{InsertOutcome, insert_idempotent};
use invoice_core::s3::S3Bucket;
use invoice_core::store::{InvoiceStore, PdfStore, Presigner, ProcessedStore};
use invoice_core::{Invoice, LineItem, ProcessedRecord, StoreError};

fn test_credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "tests")
}

/// moto's server with the fixes for its known differences from AWS that `cargo xtask` applies
/// to every emulator it starts (a Python file, not Rust: no dependency on xtask's code). The
/// one these tests need: moto checks a write's condition and applies it without a lock, so two
/// racing transactions could both pass (DynamoDB applies each atomically).
const SERVER: &str = concat!(
    "import sys\n",
    include_str!("../../../xtask/src/moto_fixes.py"),
    "\nfrom moto.server import main\nmain(sys.argv[2:])\n"
);

/// A moto server owned by one test.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        Self::start_with(&[])
    }

    /// A moto that checks the signature and IAM permissions of every request after the
    /// first `unchecked` ones (moto's `INITIAL_NO_AUTH_ACTION_COUNT`).
    fn start_checking_signatures_after(unchecked: u32) -> Moto {
        Self::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", &unchecked.to_string())])
    }

    fn start_with(env: &[(&str, &str)]) -> Moto {
        // The port is free when probed but could be taken before moto binds it: retry.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let child = Command::new("python3")
                .args([
                    "-c",
                    SERVER,
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto is installed (pip install 'moto[server]')");
            let mut moto = Moto { child, port };
            if moto.wait_healthy(Duration::from_secs(30)) {
                return moto;
            }
            let _ = moto.child.kill();
            let _ = moto.child.wait();
        }
        panic!("moto server did not become healthy");
    }

    fn wait_healthy(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if http_get(self.port, "/moto-api/").is_ok_and(|(status, _)| status == 200) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .http_client(https())
            .endpoint_url(self.endpoint())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// The functions' PDF bucket, configured as they configure it.
    fn bucket(&self, bucket: &str) -> S3Bucket {
        self.bucket_as(bucket, test_credentials())
    }

    fn bucket_as(&self, bucket: &str, credentials: Credentials) -> S3Bucket {
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .build();
        S3Bucket::new(&config, bucket)
    }

    fn s3(&self) -> aws_sdk_s3::Client {
        self.s3_as(test_credentials())
    }

    fn s3_as(&self, credentials: Credentials) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .http_client(https())
            .endpoint_url(self.endpoint())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(credentials)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    fn iam(&self) -> aws_sdk_iam::Client {
        let config = aws_sdk_iam::Config::builder()
            .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
            .http_client(https())
            .endpoint_url(self.endpoint())
            .region(aws_sdk_iam::config::Region::new("us-east-1"))
            .credentials_provider(test_credentials())
            .build();
        aws_sdk_iam::Client::from_conf(config)
    }
}

/// The functions' HTTPS connector (rustls with ring): the SDK crates are built without a
/// default client (see the workspace manifest).
fn https() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.1 GET (no client crate needed): status and body.
fn http_get(port: u16, path_and_query: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok((status, body))
}

async fn create_tables(client: &aws_sdk_dynamodb::Client) {
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    client
        .create_table()
        .table_name("Invoices")
        .key_schema(key("InvoiceID", KeyType::Hash))
        .key_schema(key("CustomerID", KeyType::Range))
        .attribute_definitions(attr("InvoiceID"))
        .attribute_definitions(attr("CustomerID"))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(CUSTOMER_INDEX)
                .key_schema(key("CustomerID", KeyType::Hash))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create invoices table");
    client
        .create_table()
        .table_name("Processed")
        .key_schema(key("InvoiceID", KeyType::Hash))
        .attribute_definitions(attr("InvoiceID"))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create processed table");
}

fn invoice(id: &str, customer: &str) -> Invoice {
    Invoice {
        invoice_id: id.into(),
        customer_id: customer.into(),
        invoice_date: "2024-03-01".into(),
        product_list: vec!["Łódka".into(), "Ποτήρι".into()],
        total_amount: 2500,
        currency: Some("EUR".into()),
        customer_name: Some("Пётр".into()),
        line_items: Some(vec![LineItem {
            description: "Łódka".into(),
            quantity: 2,
            unit_price: 1250,
        }]),
        tax_amount: None,
    }
}

#[tokio::test]
async fn invoices_round_trip_with_conditional_insert() {
    let moto = Moto::start();
    let client = moto.dynamodb();
    create_tables(&client).await;
    let store = DynamoInvoiceStore::new(client, "Invoices");

    let original = invoice("INV1", "CUST1");
    assert_eq!(store.find_by_id("INV1").await.unwrap(), None);
    store.insert_new(&original).await.unwrap();
    assert_eq!(
        store.find_by_id("INV1").await.unwrap(),
        Some(original.clone())
    );
    assert_eq!(
        store.insert_new(&original).await,
        Err(StoreError::AlreadyExists)
    );

    assert_eq!(
        insert_idempotent(&store, &original).await.unwrap(),
        InsertOutcome::Unchanged
    );
    let other_customer = invoice("INV1", "CUST2");
    assert!(matches!(
        insert_idempotent(&store, &other_customer).await.unwrap(),
        InsertOutcome::Conflict(_)
    ));
    assert_eq!(
        insert_idempotent(&store, &invoice("INV2", "CUST2"))
            .await
            .unwrap(),
        InsertOutcome::Created
    );
}

/// Two customers' first writes of one InvoiceID, sent together: exactly one is stored, the
/// other is told it conflicts, and the guard item that decided it is no invoice to anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_inserts_of_one_invoice_id_store_one_customer() {
    let moto = Moto::start();
    let client = moto.dynamodb();
    create_tables(&client).await;
    let store = DynamoInvoiceStore::new(client.clone(), "Invoices");
    // Several rounds, because one round can be serialised by luck.
    for round in 0..8 {
        let id = format!("RACE{round}");
        let (a, b) = (invoice(&id, "CUST-A"), invoice(&id, "CUST-B"));
        let (ra, rb) = tokio::join!(insert_idempotent(&store, &a), insert_idempotent(&store, &b));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let winner = match (&ra, &rb) {
            (InsertOutcome::Created, InsertOutcome::Conflict(held)) => {
                assert_eq!(**held, a, "{id}");
                &a
            }
            (InsertOutcome::Conflict(held), InsertOutcome::Created) => {
                assert_eq!(**held, b, "{id}");
                &b
            }
            other => panic!("{id}: expected one created and one conflict, got {other:?}"),
        };
        assert_eq!(store.find_by_id(&id).await.unwrap().as_ref(), Some(winner));
        // One invoice item plus its guard under the InvoiceID, the guard owned by the winner.
        let items = client
            .query()
            .table_name("Invoices")
            .key_condition_expression("InvoiceID = :id")
            .expression_attribute_values(":id", AttributeValue::S(id.clone()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default();
        let mut customers: Vec<(String, Option<String>)> = items
            .iter()
            .map(|item| {
                (
                    item["CustomerID"].as_s().unwrap().clone(),
                    item.get(GUARD_OWNER).map(|o| o.as_s().unwrap().clone()),
                )
            })
            .collect();
        customers.sort();
        assert_eq!(
            customers,
            [
                (
                    INVOICE_ID_GUARD.to_string(),
                    Some(winner.customer_id.clone())
                ),
                (winner.customer_id.clone(), None),
            ],
            "{id}"
        );
    }
    // The guards are in the table and its index, yet no customer's listing shows them.
    for customer in ["CUST-A", "CUST-B"] {
        let page = store.list_by_customer(customer, 100, None).await.unwrap();
        assert!(
            page.invoices
                .iter()
                .all(|i| i.customer_id == customer && i.invoice_id.starts_with("RACE")),
            "{page:?}"
        );
    }
    let a = store.list_by_customer("CUST-A", 100, None).await.unwrap();
    let b = store.list_by_customer("CUST-B", 100, None).await.unwrap();
    assert_eq!(a.invoices.len() + b.invoices.len(), 8);
    // The owner may write its InvoiceID again once its invoice is gone; the other may not.
    let held = store.find_by_id("RACE0").await.unwrap().unwrap();
    client
        .delete_item()
        .table_name("Invoices")
        .key("InvoiceID", AttributeValue::S("RACE0".into()))
        .key("CustomerID", AttributeValue::S(held.customer_id.clone()))
        .send()
        .await
        .unwrap();
    let other = if held.customer_id == "CUST-A" {
        "CUST-B"
    } else {
        "CUST-A"
    };
    assert_eq!(
        store.insert_new(&invoice("RACE0", other)).await,
        Err(StoreError::AlreadyExists)
    );
    store.insert_new(&held).await.unwrap();
}

#[tokio::test]
async fn customer_listing_pages_through_the_gsi() {
    let moto = Moto::start();
    let client = moto.dynamodb();
    create_tables(&client).await;
    let store = DynamoInvoiceStore::new(client, "Invoices");
    for n in 1..=5 {
        store
            .insert_new(&invoice(&format!("INV{n}"), "CUST1"))
            .await
            .unwrap();
    }
    store.insert_new(&invoice("INV9", "CUST2")).await.unwrap();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let page = store
            .list_by_customer("CUST1", 2, after.as_deref())
            .await
            .unwrap();
        assert!(page.invoices.len() <= 2);
        assert!(page.invoices.iter().all(|i| i.customer_id == "CUST1"));
        seen.extend(page.invoices.into_iter().map(|i| i.invoice_id));
        after = page.last_invoice_id;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(after, None, "listing did not end");
    seen.sort();
    assert_eq!(seen, ["INV1", "INV2", "INV3", "INV4", "INV5"]);
    let none = store.list_by_customer("NOBODY", 10, None).await.unwrap();
    assert!(none.invoices.is_empty() && none.last_invoice_id.is_none());
}

#[tokio::test]
async fn processed_records_use_s3key_and_read_legacy_rows() {
    let moto = Moto::start();
    let client = moto.dynamodb();
    create_tables(&client).await;
    let store = DynamoProcessedStore::new(client.clone(), "Processed");
    let record = ProcessedRecord {
        invoice_id: "INV1".into(),
        s3_key: "invoices/INV1.pdf".into(),
    };
    store.record(&record).await.unwrap();
    store.record(&record).await.unwrap();
    assert_eq!(store.get("INV1").await.unwrap(), Some(record));
    assert_eq!(store.get("INV404").await.unwrap(), None);

    let raw = client
        .get_item()
        .table_name("Processed")
        .key(
            "InvoiceID",
            aws_sdk_dynamodb::types::AttributeValue::S("INV1".into()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert!(raw.contains_key("S3Key") && !raw.contains_key("s3key"));

    // A row written by the original Go handler.
    client
        .put_item()
        .table_name("Processed")
        .item(
            "InvoiceID",
            aws_sdk_dynamodb::types::AttributeValue::S("OLD1".into()),
        )
        .item(
            "s3key",
            aws_sdk_dynamodb::types::AttributeValue::S("old/OLD1.pdf".into()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        store.get("OLD1").await.unwrap().unwrap().s3_key,
        "old/OLD1.pdf"
    );
}

#[tokio::test]
async fn missing_table_is_a_backend_error() {
    let moto = Moto::start();
    let store = DynamoInvoiceStore::new(moto.dynamodb(), "NoSuchTable");
    assert!(matches!(
        store.find_by_id("INV1").await,
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        store.insert_new(&invoice("INV1", "CUST1")).await,
        Err(StoreError::Backend(_))
    ));
}

#[tokio::test]
async fn stored_pdf_downloads_through_the_presigned_url() {
    let moto = Moto::start();
    let s3 = moto.s3();
    s3.create_bucket().bucket("pdfs").send().await.unwrap();
    let store = moto.bucket("pdfs");
    let pdf = b"%PDF-1.7 not really a PDF but bytes are bytes \xe2\x82\xac".to_vec();
    store
        .put_pdf("invoices/INV1.pdf", pdf.clone())
        .await
        .unwrap();

    let head = s3
        .head_object()
        .bucket("pdfs")
        .key("invoices/INV1.pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/pdf"));

    let url = store
        .presign_get("invoices/INV1.pdf", Duration::from_secs(900))
        .await
        .unwrap();
    assert!(url.contains("X-Amz-Expires=900"), "{url}");
    let path = url
        .strip_prefix(&moto.endpoint())
        .unwrap_or_else(|| panic!("path-style URL on the endpoint: {url}"));
    let (status, body) = http_get(moto.port, path).unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, pdf);

    let missing_bucket = moto.bucket("no-such-bucket");
    assert!(matches!(
        missing_bucket.put_pdf("k", vec![1]).await,
        Err(StoreError::Backend(_))
    ));
}

/// moto recomputes the SigV4 signature of every request with botocore once its unchecked
/// requests are used up: the upload's signature must be what botocore computes, and a wrong
/// secret must be refused (so the check is real).
#[tokio::test]
async fn uploads_pass_s3_signature_checks() {
    // Unchecked: creating the user, its key and its policy.
    let moto = Moto::start_checking_signatures_after(3);
    let iam = moto.iam();
    iam.create_user()
        .user_name("pdf-writer")
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name("pdf-writer")
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    let policy = std::fs::read_to_string(format!(
        "{}/tests/fixtures/allow_all_policy.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    iam.put_user_policy()
        .user_name("pdf-writer")
        .policy_name("all")
        .policy_document(policy)
        .send()
        .await
        .unwrap();
    let credentials =
        |secret: &str| Credentials::new(key.access_key_id(), secret, None, None, "moto");
    let good = credentials(key.secret_access_key());
    let s3 = moto.s3_as(good.clone());
    s3.create_bucket().bucket("pdfs").send().await.unwrap();

    let pdf = b"%PDF-1.7 signed".to_vec();
    // A key of the shape generate-pdf writes. (moto's check rejects even the S3 client's own
    // signature once a key holds a space or non-ASCII: its recomputation encodes those
    // differently. The encoding itself is checked against the S3 client in src/s3.rs.)
    let key_name = "invoices/INV-1.pdf";
    moto.bucket_as("pdfs", good)
        .put_pdf(key_name, pdf.clone())
        .await
        .unwrap();
    let stored = s3
        .get_object()
        .bucket("pdfs")
        .key(key_name)
        .send()
        .await
        .unwrap();
    assert_eq!(stored.content_type(), Some("application/pdf"));
    assert_eq!(
        stored.body.collect().await.unwrap().into_bytes().as_ref(),
        pdf
    );

    let err = moto
        .bucket_as("pdfs", credentials("not-the-secret"))
        .put_pdf("other.pdf", pdf)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SignatureDoesNotMatch"), "{err}");
}
