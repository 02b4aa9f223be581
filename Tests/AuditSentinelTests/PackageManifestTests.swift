// The package as a dependency: what other packages can use of it (SwiftPM's own reading of the manifest).
import Foundation
import TestSupport
import Testing

@Suite("package manifest")
struct PackageManifestTests {
    /// `swift package dump-package`, parsed; its own scratch path, so it never waits on the build's lock.
    func manifest() throws -> [String: Any] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("dump-package-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        process.arguments = ["swift", "package", "--package-path", packageRoot.path, "--scratch-path", scratch.path, "dump-package"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "swift package dump-package failed")
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// SwiftPM refuses unsafeFlags in the targets a dependent builds: no product may reach one. And no
    /// product takes the name of swift-kafka-client's `Kafka`, which users may depend on beside ours.
    @Test func productsCanBeUsedAsADependency() throws {
        let package = try manifest()
        let targets = try #require(package["targets"] as? [[String: Any]])
        let byName = Dictionary(uniqueKeysWithValues: targets.compactMap { target in (target["name"] as? String).map { ($0, target) } })
        func dependencies(_ target: [String: Any]) -> [String] {
            ((target["dependencies"] as? [[String: Any]]) ?? []).compactMap { dependency in
                ((dependency["byName"] ?? dependency["target"]) as? [Any])?.first as? String
            }.filter { byName[$0] != nil }
        }
        func unsafeFlags(_ target: [String: Any]) -> Bool {
            ((target["settings"] as? [[String: Any]]) ?? []).contains { (($0["kind"] as? [String: Any])?["unsafeFlags"]) != nil }
        }
        let products = try #require(package["products"] as? [[String: Any]])
        #expect(products.count >= 3)
        for product in products {
            let name = try #require(product["name"] as? String)
            #expect(name != "Kafka", "swift-kafka-client's product name")
            var seen: Set<String> = []
            var pending = (product["targets"] as? [String]) ?? []
            while let next = pending.popLast() {
                guard seen.insert(next).inserted, let target = byName[next] else { continue }
                #expect(!unsafeFlags(target), "product \(name) reaches target \(next), which has unsafeFlags")
                pending += dependencies(target)
            }
            #expect(!seen.isEmpty)
        }
        // The check sees flags where they are: the fuzz target (in no product) has one.
        #expect(byName["audit-sentinel-fuzz"].map(unsafeFlags) == true)
    }
}
