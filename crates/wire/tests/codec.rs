//! Round trips, size bounds, truncation, garbage and shape limits of the wire codec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use futures::io::Cursor;
use prost::Message;
use tpod_wire::codec::{
    ATTEST_MAX_BYTES, BLOB_MAX_BYTES, LOGS_MAX_BYTES, MAX_MESSAGE_BYTES, PROVISION_MAX_BYTES, QUOTE_MAX_BYTES,
    max_message_bytes,
};
use tpod_wire::limits::{
    MAX_ARGS, MAX_BLOB_CHUNK_BYTES, MAX_CONTAINERS, MAX_DIGEST_BYTES, MAX_ENV, MAX_LAYERS, MAX_LOG_CHUNK_BYTES,
    MAX_PORTS, MAX_PROCESS_BYTES, MAX_SEALED_IMAGE_BYTES, MAX_SECRET_BYTES, MAX_STRING_BYTES, MAX_TEXT_BYTES,
};
use tpod_wire::pb::{
    self, blob_reply::Result as BlobOutcome, provision_request::Action, provision_response::Result as Outcome,
    volume::Kind,
};
use tpod_wire::{PROVISION_PROTOCOL, VERSION, Validate, WireError, decode, read_message, write_message};

/// In-memory streams are always ready, so polling once must finish; no executor needed.
fn run<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("in-memory I/O should never be pending"),
    }
}

fn frame<M: Message>(message: &M) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    run(write_message(&mut out, message, MAX_MESSAGE_BYTES)).unwrap();
    out.into_inner()
}

fn read<M: Message + Default + Validate>(bytes: &[u8]) -> Result<M, WireError> {
    run(read_message::<M, _>(&mut Cursor::new(bytes), MAX_MESSAGE_BYTES))
}

fn round_trip<M: Message + Default + Validate + PartialEq + Debug>(message: M) {
    let bytes = frame(&message);
    let mut stream = Cursor::new(bytes.clone());
    assert_eq!(run(read_message::<M, _>(&mut stream, MAX_MESSAGE_BYTES)).unwrap(), message);
    // Exactly one frame was consumed.
    assert_eq!(stream.position() as usize, bytes.len());
}

fn resources() -> pb::Resources {
    pb::Resources { cpu_millis: 1500, memory_bytes: 1 << 30, gpu: 1, storage_bytes: 10 << 30, pids: 0 }
}

fn container(name: &str) -> pb::Container {
    pb::Container {
        name: name.into(),
        image: "docker.io/library/nginx:1.27".into(),
        sealed_image: Some(sealed(300)),
        sealed_process: Some(sealed(120)),
        working_dir: "/srv".into(),
        ports: vec![pb::Port {
            container_port: 8080,
            protocol: pb::port::Protocol::Http.into(),
            hostname: "app.example.org".into(),
        }],
        resources: Some(resources()),
        volume_mounts: vec![pb::VolumeMount { name: "data".into(), mount_path: "/data".into(), read_only: false }],
        ..Default::default()
    }
}

fn pod() -> pb::Pod {
    pb::Pod {
        name: "web".into(),
        containers: vec![container("nginx"), container("sidecar")],
        volumes: vec![
            pb::Volume { name: "tmp".into(), kind: Some(Kind::EmptyDir(pb::volume::EmptyDir::default())) },
            pb::Volume {
                name: "data".into(),
                kind: Some(Kind::Filesystem(pb::volume::Filesystem { size_bytes: 1 << 30 })),
            },
            pb::Volume {
                name: "keys".into(),
                kind: Some(Kind::Secret(pb::volume::Secret { sealed: Some(sealed(100)) })),
            },
        ],
        replicas: Some(pb::Replicas { min: 0, max: 3, idle_timeout_secs: 30, target_concurrency: 10 }),
        sealed_by: vec![9; 32],
        restart_policy: pb::pod::RestartPolicy::OnFailure.into(),
    }
}

fn sealed(len: usize) -> pb::Sealed {
    pb::Sealed { enc: vec![5; 32], ciphertext: vec![7; len] }
}

fn provision_request(action: Action) -> pb::ProvisionRequest {
    pb::ProvisionRequest {
        version: VERSION,
        pod_id: vec![0xab; 32],
        publisher: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
        nonce: 42,
        expiry_unix: 1_900_000_000,
        action: Some(action),
    }
}

fn quote_response() -> pb::QuoteResponse {
    pb::QuoteResponse {
        version: VERSION,
        available: true,
        reason: String::new(),
        free: Some(resources()),
        pricing: Some(pb::PricingTable {
            prices: vec![pb::ResourcePrice {
                resource: "cpu".into(),
                reservation: "1000000000000".into(),
                usage: "2000000000000".into(),
            }],
            token: "0x5FbDB2315678afecb367f032d93F642f64180aa3".into(),
            tee_type: "sev-snp".into(),
            cpu_model: "AMD EPYC 9654".into(),
        }),
        payment_contract: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512".into(),
        chain_id: 31337,
        token: vec![0x5f; 20],
        min_funding: "1000000".into(),
        min_unlock_delay_secs: 3600,
        provider_address: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
        domain: "pods.example.com".into(),
        error: None,
        taken_hostnames: Vec::new(),
    }
}

fn logs_request() -> pb::LogsRequest {
    pb::LogsRequest {
        version: VERSION,
        pod_id: vec![1; 32],
        publisher: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
        nonce: 7,
        expiry_unix: 1_900_000_000,
        container: "nginx".into(),
        follow: true,
        tail_lines: 100,
        replica: 1,
    }
}

#[test]
fn every_message_round_trips() {
    round_trip(pb::QuoteRequest {
        version: VERSION,
        resources: Some(resources()),
        hostnames: vec!["app.example.com".into()],
    });
    round_trip(quote_response());
    for action in [
        Action::Provision(pb::Provision { pod: Some(pod()), pricing: None }),
        Action::Update(pb::Update { pod: Some(pod()) }),
        Action::Delete(pb::Delete {}),
        Action::Status(pb::Status {}),
    ] {
        round_trip(provision_request(action));
    }
    round_trip(pb::SignedRequest {
        version: VERSION,
        payload: provision_request(Action::Delete(pb::Delete {})).encode_to_vec(),
        signature: vec![9; 65],
    });
    round_trip(pb::ProvisionResponse {
        version: VERSION,
        result: Some(Outcome::Status(pb::PodStatus {
            state: "running".into(),
            url: "https://app.example.org".into(),
            containers: vec![pb::ContainerStatus {
                name: "nginx".into(),
                state: "exited".into(),
                exit_code: -1,
                has_exit_code: true,
                restarts: 2,
                replica: 1,
            }],
            tcp_ports: BTreeMap::from([(5432, 30432)]),
            billing: Some(billing()),
            progress: Some(pb::Progress {
                phase: "unpacking".into(),
                container: "nginx".into(),
                done_bytes: 1 << 20,
                total_bytes: 3 << 20,
            }),
            last_wake: Some(pb::Wake { at_unix: 1_700_000_000, millis: 120, error: String::new() }),
            replicas: 2,
        })),
    });
    round_trip(pb::ProvisionResponse {
        version: VERSION,
        result: Some(Outcome::Error(pb::Error { code: 404, message: "no such pod".into() })),
    });
    round_trip(logs_request());
    round_trip(pb::LogChunk {
        version: VERSION,
        container: "nginx".into(),
        data: b"GET / 200\n".to_vec(),
        timestamp_unix_nanos: 1_700_000_000_000_000_000,
        end: false,
        error: None,
    });
    round_trip(pb::LogChunk {
        version: VERSION,
        end: true,
        error: Some(pb::Error { code: 403, message: "wrong signer".into() }),
        ..Default::default()
    });
    round_trip(blob_chunk(0, vec![7; 100]));
    round_trip(pb::BlobOffer { version: VERSION, cid: CID.into(), total_size: 1 << 30 });
    round_trip(pb::BlobReply {
        version: VERSION,
        result: Some(BlobOutcome::State(pb::BlobState { complete: false, received: 1 << 20 })),
    });
    round_trip(pb::BlobReply {
        version: VERSION,
        result: Some(BlobOutcome::Error(pb::Error { code: 409, message: "wrong offset".into() })),
    });
}

const CID: &str = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";

fn blob_chunk(offset: u64, data: Vec<u8>) -> pb::BlobChunk {
    pb::BlobChunk { version: VERSION, offset, data: data.into(), prefix_sha256: vec![1; 32] }
}

#[test]
fn signed_payload_decodes_and_validates() {
    let inner = provision_request(Action::Provision(pb::Provision { pod: Some(pod()), pricing: None }));
    let signed = pb::SignedRequest { version: VERSION, payload: inner.encode_to_vec(), signature: vec![1; 65] };
    let got: pb::SignedRequest = read(&frame(&signed)).unwrap();
    assert_eq!(decode::<pb::ProvisionRequest>(&got.payload).unwrap(), inner);
    let logs = pb::SignedRequest { payload: logs_request().encode_to_vec(), ..signed };
    assert_eq!(decode::<pb::LogsRequest>(&logs.payload).unwrap(), logs_request());
}

#[test]
fn frames_follow_each_other_on_one_stream() {
    let mut bytes = frame(&logs_request());
    let chunk = pb::LogChunk { version: VERSION, end: true, ..Default::default() };
    bytes.extend(frame(&chunk));
    let mut stream = Cursor::new(bytes);
    assert_eq!(run(read_message::<pb::LogsRequest, _>(&mut stream, LOGS_MAX_BYTES)).unwrap(), logs_request());
    assert_eq!(run(read_message::<pb::LogChunk, _>(&mut stream, LOGS_MAX_BYTES)).unwrap(), chunk);
    assert!(matches!(run(read_message::<pb::LogChunk, _>(&mut stream, LOGS_MAX_BYTES)), Err(WireError::Truncated)));
}

#[test]
fn protocol_limits_table() {
    assert_eq!(max_message_bytes(PROVISION_PROTOCOL), Some(PROVISION_MAX_BYTES));
    assert_eq!(max_message_bytes(tpod_wire::QUOTE_PROTOCOL), Some(QUOTE_MAX_BYTES));
    assert_eq!(max_message_bytes(tpod_wire::LOGS_PROTOCOL), Some(LOGS_MAX_BYTES));
    assert_eq!(max_message_bytes(tpod_wire::BLOB_PROTOCOL), Some(BLOB_MAX_BYTES));
    assert_eq!(max_message_bytes(tpod_wire::ATTEST_PROTOCOL), Some(ATTEST_MAX_BYTES));
    assert_eq!(max_message_bytes("/tpod/unknown/1"), None);
    // A full blob chunk at the largest offset fits in one frame.
    let full = blob_chunk(u64::MAX - MAX_BLOB_CHUNK_BYTES as u64, vec![0xff; MAX_BLOB_CHUNK_BYTES]);
    assert!(full.encoded_len() <= BLOB_MAX_BYTES);
    let mut framed = Cursor::new(Vec::new());
    run(write_message(&mut framed, &full, BLOB_MAX_BYTES)).unwrap();
    assert_eq!(
        run(read_message::<pb::BlobChunk, _>(&mut Cursor::new(framed.into_inner()), BLOB_MAX_BYTES)).unwrap(),
        full
    );
}

fn billing() -> pb::Billing {
    pb::Billing {
        usage: Some(pb::Usage { cpu_used: "1000000000".into(), ..Default::default() }),
        amount: "12345".into(),
        claimed: "12000".into(),
        last_claim: Some(pb::SignedClaim {
            report: Some(pb::UsageReport { channel: vec![1; 32], pod_id: vec![2; 32], ..Default::default() }),
            cumulative_amount: "12000".into(),
            signature: vec![3; 65],
            confirmed: true,
        }),
        ..Default::default()
    }
}

#[test]
fn billing_fields_are_bounded() {
    let status = |billing: pb::Billing| pb::ProvisionResponse {
        version: VERSION,
        result: Some(Outcome::Status(pb::PodStatus { billing: Some(billing), ..Default::default() })),
    };
    read::<pb::ProvisionResponse>(&frame(&status(billing()))).unwrap();
    let long = "9".repeat(MAX_STRING_BYTES + 1);
    let err = read::<pb::ProvisionResponse>(&frame(&status(pb::Billing {
        usage: Some(pb::Usage { egress: long.clone(), ..Default::default() }),
        ..billing()
    })))
    .unwrap_err();
    assert!(err.to_string().contains("status.billing.usage"), "{err}");
    let mut claim = billing().last_claim.unwrap();
    claim.signature = vec![0; 66];
    let err = read::<pb::ProvisionResponse>(&frame(&status(pb::Billing { last_claim: Some(claim), ..billing() })))
        .unwrap_err();
    assert!(err.to_string().contains("last_claim"), "{err}");
}

#[test]
fn blob_message_limits() {
    read::<pb::BlobChunk>(&frame(&blob_chunk(0, vec![1; MAX_BLOB_CHUNK_BYTES]))).unwrap();
    let err = read::<pb::BlobChunk>(&frame(&blob_chunk(0, vec![1; MAX_BLOB_CHUNK_BYTES + 1]))).unwrap_err();
    assert_eq!(limit_field(err), "data");
    let err = read::<pb::BlobChunk>(&frame(&pb::BlobChunk { prefix_sha256: vec![1; 31], ..blob_chunk(0, vec![]) }));
    assert!(matches!(err, Err(WireError::WrongLength { ref field, .. }) if field == "prefix_sha256"), "{err:?}");
    let err = read::<pb::BlobChunk>(&frame(&blob_chunk(u64::MAX, vec![1]))).unwrap_err();
    assert!(matches!(err, WireError::Inconsistent { ref field, .. } if field == "offset"), "{err:?}");

    let long_cid = pb::BlobOffer { version: VERSION, cid: "b".repeat(MAX_DIGEST_BYTES + 1), total_size: 1 };
    assert_eq!(limit_field(read::<pb::BlobOffer>(&frame(&long_cid)).unwrap_err()), "cid");

    let error = pb::Error { code: 500, message: "e".repeat(MAX_TEXT_BYTES + 1) };
    let reply = pb::BlobReply { version: VERSION, result: Some(BlobOutcome::Error(error)) };
    assert_eq!(limit_field(read::<pb::BlobReply>(&frame(&reply)).unwrap_err()), "error.message");
}

#[test]
fn sealed_fields_are_bounded() {
    read::<pb::ProvisionRequest>(&provision_with(pod())).unwrap();
    let mut p = pod();
    p.containers[1].sealed_image = Some(sealed(MAX_SEALED_IMAGE_BYTES + 1));
    let err = read::<pb::ProvisionRequest>(&provision_with(p)).unwrap_err();
    assert_eq!(limit_field(err), "provision.pod.containers[1].sealed_image.ciphertext");
    let mut p = pod();
    p.volumes[2].kind = Some(Kind::Secret(pb::volume::Secret { sealed: Some(sealed(MAX_SECRET_BYTES + 17)) }));
    let err = read::<pb::ProvisionRequest>(&provision_with(p)).unwrap_err();
    assert_eq!(limit_field(err), "provision.pod.volumes[2].secret.sealed.ciphertext");
    let mut p = pod();
    p.containers[0].sealed_image = Some(pb::Sealed { enc: vec![1; 33], ciphertext: vec![] });
    let err = read::<pb::ProvisionRequest>(&provision_with(p)).unwrap_err();
    assert!(matches!(err, WireError::WrongLength { ref field, .. } if field.ends_with("sealed_image.enc")), "{err:?}");
    let p = pb::Pod { sealed_by: vec![1; 31], ..pod() };
    let err = read::<pb::ProvisionRequest>(&provision_with(p)).unwrap_err();
    assert!(matches!(err, WireError::WrongLength { ref field, .. } if field == "provision.pod.sealed_by"), "{err:?}");
    let p = pb::Pod { restart_policy: 4, ..pod() };
    let err = read::<pb::ProvisionRequest>(&provision_with(p)).unwrap_err();
    assert!(
        matches!(err, WireError::Inconsistent { ref field, .. } if field == "provision.pod.restart_policy"),
        "{err:?}"
    );

    // What sealed images and secrets open to is bounded too.
    let blob = pb::EncryptedBlob { cid: CID.into(), key: vec![3; 32], digest: "sha256:00".into(), size: 1 };
    let layer = pb::EncryptedLayer { blob: Some(blob.clone()), gzip: true, diff_id: "sha256:00".into() };
    let keys = pb::ImageKeys { manifest_digest: "sha256:00".into(), config: Some(blob.clone()), layers: vec![layer] };
    decode::<pb::ImageKeys>(&keys.encode_to_vec()).unwrap();
    let many = pb::ImageKeys { layers: vec![keys.layers[0].clone(); MAX_LAYERS + 1], ..keys.clone() };
    assert_eq!(limit_field(decode::<pb::ImageKeys>(&many.encode_to_vec()).unwrap_err()), "image.layers");
    let short_key = pb::ImageKeys { config: Some(pb::EncryptedBlob { key: vec![3; 16], ..blob }), ..keys };
    let err = decode::<pb::ImageKeys>(&short_key.encode_to_vec()).unwrap_err();
    assert!(matches!(err, WireError::WrongLength { ref field, .. } if field == "image.config.key"), "{err:?}");
    let file = pb::SecretFile { name: "n".repeat(256), data: vec![] };
    let err = decode::<pb::SecretFiles>(&pb::SecretFiles { files: vec![file] }.encode_to_vec()).unwrap_err();
    assert_eq!(limit_field(err), "files[0].name");
}

#[test]
fn sealed_processes_are_bounded_outside_and_inside() {
    // The ciphertext: the largest process plus the tag, and no more.
    let mut p = pod();
    p.containers[0].sealed_process = Some(sealed(MAX_PROCESS_BYTES + 16));
    read::<pb::ProvisionRequest>(&provision_with(p.clone())).unwrap();
    p.containers[0].sealed_process = Some(sealed(MAX_PROCESS_BYTES + 17));
    let err = read::<pb::ProvisionRequest>(&provision_with(p)).unwrap_err();
    assert_eq!(limit_field(err), "provision.pod.containers[0].sealed_process.ciphertext");

    // What it opens to keeps the limits env and args had in clear.
    let process = pb::ProcessSpec {
        command: vec!["/bin/sh".into(), "-c".into()],
        has_command: true,
        args: vec!["exec app".into()],
        has_args: true,
        env: BTreeMap::from([("MODE".into(), "prod".into())]),
    };
    assert_eq!(decode::<pb::ProcessSpec>(&process.encode_to_vec()).unwrap(), process);
    let bad = |change: &dyn Fn(&mut pb::ProcessSpec)| {
        let mut p = process.clone();
        change(&mut p);
        limit_field(decode::<pb::ProcessSpec>(&p.encode_to_vec()).unwrap_err())
    };
    assert_eq!(bad(&|p| p.args = vec![String::new(); MAX_ARGS + 1]), "args");
    assert_eq!(bad(&|p| p.command[1] = "x".repeat(MAX_TEXT_BYTES + 1)), "command[1]");
    assert_eq!(bad(&|p| p.env = (0..=MAX_ENV).map(|i| (format!("K{i}"), String::new())).collect()), "env");
    assert_eq!(bad(&|p| drop(p.env.insert("BIG".into(), "v".repeat(MAX_TEXT_BYTES + 1)))), "env[BIG]");
    assert_eq!(bad(&|p| drop(p.env.insert("K".repeat(MAX_STRING_BYTES + 1), String::new()))), "env key");
    // Every field within its limit, and still too large as a whole.
    let whole = |p: &mut pb::ProcessSpec| {
        p.env = (0..MAX_ENV).map(|i| (format!("K{i}"), "v".repeat(MAX_TEXT_BYTES))).collect();
    };
    assert_eq!(bad(&whole), "process");
    let error = decode::<pb::ProcessSpec>(&{
        let mut p = process.clone();
        whole(&mut p);
        p.encode_to_vec()
    })
    .unwrap_err()
    .to_string();
    // A value is never quoted in an error: it may be a secret.
    assert!(!error.contains("vvvv"), "{error}");
}

#[test]
fn log_chunk_limits() {
    let chunk = |data: Vec<u8>| pb::LogChunk { version: VERSION, data, ..Default::default() };
    read::<pb::LogChunk>(&frame(&chunk(vec![b'x'; MAX_LOG_CHUNK_BYTES]))).unwrap();
    let err = read::<pb::LogChunk>(&frame(&chunk(vec![b'x'; MAX_LOG_CHUNK_BYTES + 1]))).unwrap_err();
    assert_eq!(limit_field(err), "data");
    let refusal = pb::LogChunk {
        end: true,
        error: Some(pb::Error { code: 403, message: "e".repeat(MAX_TEXT_BYTES + 1) }),
        ..chunk(vec![])
    };
    assert_eq!(limit_field(read::<pb::LogChunk>(&frame(&refusal)).unwrap_err()), "error.message");
}

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[test]
fn oversized_prefix_is_refused_before_reading_the_body() {
    // Claims 1 TiB and sends nothing more: must fail on the prefix alone, without allocating.
    let err = read::<pb::ProvisionRequest>(&varint(1 << 40)).unwrap_err();
    assert!(matches!(err, WireError::TooLarge { len, limit } if len == 1 << 40 && limit == MAX_MESSAGE_BYTES));

    // One byte over the per-protocol limit.
    let prefix = varint(QUOTE_MAX_BYTES as u64 + 1);
    let err = run(read_message::<pb::QuoteRequest, _>(&mut Cursor::new(prefix), QUOTE_MAX_BYTES)).unwrap_err();
    assert!(matches!(err, WireError::TooLarge { .. }));

    // Varints longer than a u64 are malformed, not huge.
    assert!(matches!(read::<pb::QuoteRequest>(&[0xff; 11]), Err(WireError::Decode(_))));
    assert!(matches!(read::<pb::QuoteRequest>(&[0xff; 10]), Err(WireError::Decode(_))));
}

#[test]
fn oversized_message_is_not_sent() {
    let chunk = pb::LogChunk { version: VERSION, data: vec![0; QUOTE_MAX_BYTES], ..Default::default() };
    let mut out = Cursor::new(Vec::new());
    let err = run(write_message(&mut out, &chunk, QUOTE_MAX_BYTES)).unwrap_err();
    assert!(matches!(err, WireError::TooLarge { .. }));
    assert!(out.into_inner().is_empty());
}

#[test]
fn truncated_input_is_reported() {
    let bytes = frame(&provision_request(Action::Provision(pb::Provision { pod: Some(pod()), pricing: None })));
    assert!(matches!(read::<pb::ProvisionRequest>(&[]), Err(WireError::Truncated)));
    // Cut inside a multi-byte prefix.
    assert!(matches!(read::<pb::ProvisionRequest>(&[0x80]), Err(WireError::Truncated)));
    for cut in [1, bytes.len() / 2, bytes.len() - 1] {
        assert!(matches!(read::<pb::ProvisionRequest>(&bytes[..cut]), Err(WireError::Truncated)), "cut at {cut}");
    }
}

/// Deterministic xorshift64 generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = (self.next() % (max_len as u64 + 1)) as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Feeds garbage to a message type, both raw and behind a correct prefix; only errors or
/// (for lucky bytes) valid messages may come out, never a panic.
fn garbage<M: Message + Default + Validate>(rng: &mut XorShift) {
    let body = rng.bytes(64);
    let _ = read::<M>(&body);
    let mut framed = varint(body.len() as u64);
    framed.extend(&body);
    let _ = read::<M>(&framed);
}

#[test]
fn garbage_never_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut decode_errors = 0;
    for _ in 0..10_000 {
        garbage::<pb::QuoteRequest>(&mut rng);
        garbage::<pb::QuoteResponse>(&mut rng);
        garbage::<pb::SignedRequest>(&mut rng);
        garbage::<pb::ProvisionRequest>(&mut rng);
        garbage::<pb::ProvisionResponse>(&mut rng);
        garbage::<pb::LogsRequest>(&mut rng);
        garbage::<pb::LogChunk>(&mut rng);
        garbage::<pb::BlobOffer>(&mut rng);
        garbage::<pb::BlobChunk>(&mut rng);
        garbage::<pb::BlobReply>(&mut rng);
        garbage::<pb::ImageKeys>(&mut rng);
        garbage::<pb::SecretFiles>(&mut rng);
        garbage::<pb::ProcessSpec>(&mut rng);
        let body = rng.bytes(64);
        let mut framed = varint(body.len() as u64);
        framed.extend(&body);
        if matches!(read::<pb::ProvisionRequest>(&framed), Err(WireError::Decode(_))) {
            decode_errors += 1;
        }
    }
    // Most random bytes are not valid protobuf.
    assert!(decode_errors > 1000, "only {decode_errors} decode errors");
}

fn limit_field(err: WireError) -> String {
    match err {
        WireError::Limit { field, .. } => field,
        other => panic!("expected a limit error, got {other:?}"),
    }
}

fn provision_with(pod: pb::Pod) -> Vec<u8> {
    frame(&provision_request(Action::Provision(pb::Provision { pod: Some(pod), pricing: None })))
}

#[test]
fn repeated_field_limits_name_the_field() {
    let mut p = pod();
    p.containers = (0..MAX_CONTAINERS).map(|i| container(&format!("c{i}"))).collect();
    read::<pb::ProvisionRequest>(&provision_with(p.clone())).unwrap();
    p.containers.push(container("one-too-many"));
    let err = read::<pb::ProvisionRequest>(&provision_with(p)).unwrap_err();
    assert_eq!(limit_field(err), "provision.pod.containers");

    let mut p = pod();
    p.containers[1].env = (0..=MAX_ENV).map(|i| (format!("K{i}"), "v".into())).collect();
    let err = read::<pb::ProvisionRequest>(&provision_with(p)).unwrap_err();
    assert_eq!(limit_field(err), "provision.pod.containers[1].env");

    let mut p = pod();
    p.containers[0].ports = vec![pb::Port::default(); MAX_PORTS + 1];
    let err = read::<pb::ProvisionRequest>(&provision_with(p)).unwrap_err();
    assert_eq!(limit_field(err), "provision.pod.containers[0].ports");

    let mut p = pod();
    p.containers[0].image = "x".repeat(MAX_STRING_BYTES + 1);
    let err = read::<pb::ProvisionRequest>(&provision_with(p)).unwrap_err();
    assert_eq!(limit_field(err), "provision.pod.containers[0].image");

    let mut update = provision_request(Action::Update(pb::Update { pod: Some(pod()) }));
    if let Some(Action::Update(pb::Update { pod: Some(p) })) = &mut update.action {
        p.volumes[0].name = "v".repeat(MAX_STRING_BYTES + 1);
    }
    let err = read::<pb::ProvisionRequest>(&frame(&update)).unwrap_err();
    assert_eq!(limit_field(err), "update.pod.volumes[0].name");
}

#[test]
fn fixed_lengths_are_checked() {
    let mut request = provision_request(Action::Status(pb::Status {}));
    request.pod_id.pop();
    let err = read::<pb::ProvisionRequest>(&frame(&request)).unwrap_err();
    assert!(matches!(err, WireError::WrongLength { ref field, len: 31, expected: 32 } if field == "pod_id"));

    let signed = pb::SignedRequest { version: VERSION, payload: vec![], signature: vec![0; 64] };
    let err = read::<pb::SignedRequest>(&frame(&signed)).unwrap_err();
    assert!(matches!(err, WireError::WrongLength { ref field, .. } if field == "signature"));
}

#[test]
fn wrong_version_is_refused() {
    fn refused<M: Message + Default + Validate + Debug>(message: &M) {
        let err = read::<M>(&frame(message)).unwrap_err();
        assert!(matches!(err, WireError::UnsupportedVersion { supported: VERSION, .. }), "{err:?}");
    }
    refused(&pb::QuoteRequest { version: 2, resources: None, hostnames: Vec::new() });
    // A missing version decodes as 0, which is refused too.
    refused(&pb::QuoteRequest::default());
    refused(&pb::QuoteResponse { version: 0, ..quote_response() });
    refused(&pb::ProvisionRequest { version: 2, ..provision_request(Action::Delete(pb::Delete {})) });
    refused(&pb::SignedRequest { version: 2, payload: vec![], signature: vec![0; 65] });
    refused(&pb::ProvisionResponse { version: 2, result: None });
    refused(&pb::LogsRequest { version: 2, ..logs_request() });
    refused(&pb::LogChunk { version: 2, ..Default::default() });
    refused(&pb::BlobChunk { version: 2, ..blob_chunk(0, vec![]) });
    refused(&pb::BlobOffer { version: 0, cid: CID.into(), total_size: 0 });
    refused(&pb::BlobReply { version: 0, result: None });
}
