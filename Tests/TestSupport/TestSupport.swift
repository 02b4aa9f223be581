// What every test target shares: where the package is and where Elastic's shared fixtures are.
import Foundation
import Testing

/// The clone's root (this file is `Tests/TestSupport/TestSupport.swift`).
public let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Where Elastic's fixtures live: `AUDIT_SENTINEL_SHARED_TESTDATA`, else `../shared/testdata` beside the clone.
public enum SharedTestData {
    public static let root: URL = {
        if let path = ProcessInfo.processInfo.environment["AUDIT_SENTINEL_SHARED_TESTDATA"] { return URL(fileURLWithPath: path) }
        return packageRoot.deletingLastPathComponent().appendingPathComponent("shared/testdata")
    }()
    /// Elastic's ingest-pipeline fixtures: raw audit logs and the ECS documents made of them.
    public static var auditLogs: URL { root.appendingPathComponent("elastic-integrations-audit-logs") }
    /// Elastic's Kubernetes detection rules.
    public static var rules: URL { root.appendingPathComponent("elastic-detection-rules-kubernetes") }
    public static var isAvailable: Bool { FileManager.default.fileExists(atPath: auditLogs.path) }
    public static var rulesAvailable: Bool { FileManager.default.fileExists(atPath: rules.path) }
    public static let skipReason: Comment = "Elastic's fixtures are not at ../shared/testdata (set AUDIT_SENTINEL_SHARED_TESTDATA)"
    public static let rulesSkipReason: Comment = "Elastic's rules are not at ../shared/testdata (set AUDIT_SENTINEL_SHARED_TESTDATA)"
}
