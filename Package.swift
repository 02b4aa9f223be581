// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "audit-sentinel",
    platforms: [.macOS(.v15)],
    products: [
        // Product names of our own: swift-kafka-client's product and module are also `Kafka`. A package that
        // depends on both renames our module (`moduleAliases: ["Kafka": "SentinelKafka"]`, see README).
        // Neither product's targets may use unsafeFlags (SwiftPM refuses them in a dependency; a test checks).
        .library(name: "AuditSentinelKafka", targets: ["Kafka"]),
        .library(name: "AuditSentinelEvents", targets: ["AuditEvents"]),
        .executable(name: "audit-sentinel", targets: ["audit-sentinel"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // The HTTP endpoint: a small async server on non-blocking sockets (no SwiftNIO: CI builds from scratch).
        .package(url: "https://github.com/swhitty/FlyingFox", from: "0.27.1"),
        // The service's parts (pipeline, endpoint, signals) as services with ordered graceful shutdown.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // The only place that names the C API: librdkafka's public and mock-cluster headers.
        .systemLibrary(
            name: "CRDKafka",
            pkgConfig: "rdkafka",
            providers: [.apt(["librdkafka-dev"])]
        ),
        // zlib, for gzip-compressed audit logs read by `replay` and `match` (streaming, in-process).
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .target(
            name: "Kafka",
            dependencies: [
                "CRDKafka",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Record decoding and normalization to Elastic's ECS view. Pure Swift, no Kafka. (The tape's hot
        // stored properties are `@exclusivity(unchecked)`: the checks cost 28 % of a decode.)
        .target(name: "AuditEvents"),
        // Elastic detection rules from TOML (our own TOML 1.0 reader), KQL parser and evaluator, rule types. Pure Swift, no Kafka.
        .target(name: "Detection", dependencies: ["AuditEvents"]),
        // Windows, suppression, state, alert documents, the consume→detect→produce loop.
        .target(name: "Pipeline", dependencies: ["Kafka", "AuditEvents", "Detection", .product(name: "Logging", package: "swift-log")]),
        .executableTarget(
            name: "audit-sentinel",
            dependencies: [
                "Kafka",
                "AuditEvents",
                "Detection",
                "Pipeline",
                "CZlib",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "FlyingFox", package: "FlyingFox"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        // The deterministic simulation (random consumer-group histories on the in-memory driver), shared by
        // the test suite and `audit-sentinel-sim`, which runs it at length in a release build.
        .target(name: "PipelineSimulation", dependencies: ["Pipeline", "Detection", "AuditEvents", "Kafka"]),
        .executableTarget(name: "audit-sentinel-sim", dependencies: ["PipelineSimulation", "Detection"]),
        // `make bench`: throughput figures as ratios measured in the same run.
        // Exact heap-in-use figures for the memory benchmark (glibc's allocator statistics).
        .target(name: "CHeapStatistics"),
        .executableTarget(
            name: "audit-sentinel-bench",
            dependencies: ["AuditEvents", "Detection", "Pipeline", "Kafka", "CHeapStatistics", .product(name: "Logging", package: "swift-log")]),
        // libFuzzer targets over record decoding, KQL and rule TOML; built only with -sanitize=fuzzer (`make fuzz`).
        .executableTarget(
            name: "audit-sentinel-fuzz", dependencies: ["AuditEvents", "Detection"],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
        // Where the package and Elastic's shared fixtures are, for every test target.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "AuditEventsTests", dependencies: ["AuditEvents", "TestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "DetectionTests", dependencies: ["Detection", "AuditEvents", "TestSupport"]),
        .testTarget(name: "PipelineTests", dependencies: ["Pipeline", "PipelineSimulation", "Detection", "AuditEvents", "Kafka", "TestSupport"]),
        .testTarget(name: "AuditSentinelTests", dependencies: ["audit-sentinel", "Kafka", "AuditEvents", "TestSupport"]),
        .testTarget(
            name: "KafkaTests",
            dependencies: ["Kafka", "TestSupport", .product(name: "Logging", package: "swift-log")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
