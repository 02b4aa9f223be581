import AuditEvents
import Detection
import Foundation
import TestSupport
import Testing

/// Our TOML reader, checked against an independent one: Python's `tomllib` (from the project's venv)
/// reads the same text and both results are compared in toml-test's tagged form ({type, value}).
@Suite("TOML reader")
struct TOMLTests {
    static let python = packageRoot.appendingPathComponent(".venv/bin/python")

    /// tomllib's reading of `text`, tagged; nil when tomllib rejects it.
    func tomllib(_ text: String) throws -> JSONValue? {
        guard FileManager.default.isExecutableFile(atPath: Self.python.path) else {
            throw TestFailure(".venv/bin/python is missing: run `make deps`")
        }
        let script = """
            import datetime, json, math, sys, tomllib
            def tag(v):
                if isinstance(v, dict): return {k: tag(x) for k, x in v.items()}
                if isinstance(v, list): return [tag(x) for x in v]
                if isinstance(v, bool): return {"type": "bool", "value": str(v).lower()}
                if isinstance(v, int): return {"type": "integer", "value": str(v)}
                if isinstance(v, float): return {"type": "float", "value": "nan" if math.isnan(v) else repr(v)}
                if isinstance(v, str): return {"type": "string", "value": v}
                return {"type": "datetime", "value": ""}
            try: doc = tomllib.loads(sys.stdin.read())
            except tomllib.TOMLDecodeError: sys.exit(3)
            print(json.dumps(tag(doc), sort_keys=True))
            """
        let process = Process()
        process.executableURL = Self.python
        process.arguments = ["-c", script]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(Data(text.utf8))
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        if process.terminationStatus == 3 { return nil }
        guard process.terminationStatus == 0 else { throw TestFailure("python failed on the document") }
        return try JSONValue.parse(Array(data))
    }

    func tagged(_ value: TOMLValue) -> JSONValue {
        func leaf(_ type: String, _ text: String) -> JSONValue { .object(["type": .string(type), "value": .string(text)]) }
        switch value {
        case .string(let string): return leaf("string", string)
        case .integer(let integer): return leaf("integer", String(integer))
        case .float(let float): return leaf("float", float.isNaN ? "nan" : float == .infinity ? "inf" : float == -.infinity ? "-inf" : "\(float)")
        case .boolean(let bool): return leaf("bool", String(bool))
        case .dateTime: return leaf("datetime", "")
        case .array(let array): return .array(array.map(tagged))
        case .table(let table): return .object(JSONObject(table.entries.sorted { $0.key < $1.key }.map { ($0.key, tagged($0.value)) }))
        }
    }

    func checkAgreement(_ text: String, _ name: String) throws {
        let expected = try #require(try tomllib(text), "tomllib rejects \(name)")
        let ours = try TOMLTable(parsing: text)
        #expect(tagged(.table(ours)) == expected, "\(name)")
    }

    static let documents: [String] = [
        #"""
        # strings of every kind
        basic = "tab\there \"quoted\" \\ \u00e9 \U0001F600"
        literal = 'C:\Users\no\escapes'
        multi = """
        first line
          second "with" ""two quotes"" \
            joined"""
        multi_literal = '''
        [ not a header ]
        # not a comment
        '''
        ends_in_quotes = """value"""""
        empty = ""
        "quoted key" = 1
        'literal key'.x = 2
        """#,
        """
        int = +99
        negative = -17
        underscores = 1_000_000
        hex = 0xDEAD_beef
        octal = 0o755
        binary = 0b1101
        zero = 0
        float = 3.1415
        exponent = -2E-2
        both = 6.626e-34
        big = 5e+22
        inf = -inf
        nan = nan
        yes = true
        no = false
        odt = 1979-05-27T07:32:00Z
        odt_space = 1979-05-27 07:32:00.999-07:00
        ldt = 1979-05-27T00:32:00
        date = 1979-05-27
        time = 07:32:00.5
        """,
        """
        top = 1
        [server]   # comment after a header
        host = "a"
        ports = [ 8000, 8001, 8002, ]
        nested = [ [1, 2], ["a", 'b'], [ { x = 1 }, {} ] ]
        spread = [
          1,   # one
          2,
        ]
        inline = { name = "x", point.x = 1, point.y = 2 }

        [a.b.c]
        d = 1
        [a]
        e = 2
        [fruit]
        apple.color = "red"
        apple.taste.sweet = true
        [fruit.apple.texture]
        smooth = true

        [[products]]
        name = "Hammer"
        [[products]]
        [[products]]
        name = "Nail"
        [[products.variants]]
        size = 1
        [products.extra]
        x = 1
        """,
        "\r\nwindows = \"line endings\"\r\n[t]\r\nx = '''\r\na\r\nb'''\r\n",
    ]

    @Test(arguments: documents.indices)
    func ourDocumentsReadAsTomllibReadsThem(index: Int) throws {
        try checkAgreement(Self.documents[index], "document \(index)")
    }

    @Test func theShippedRuleAndSettingsReadAsTomllibReadsThem() throws {
        for path in ["Config/rules/kubernetes_denied_service_account_request.toml", "Config/audit-sentinel.toml"] {
            try checkAgreement(String(contentsOf: packageRoot.appendingPathComponent(path), encoding: .utf8), path)
        }
    }

    @Test(.enabled(if: SharedTestData.rulesAvailable, SharedTestData.rulesSkipReason))
    func elasticsRulesReadAsTomllibReadsThem() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: SharedTestData.rules.path).filter { $0.hasSuffix(".toml") }
        #expect(files.count >= 45)
        for file in files {
            try checkAgreement(String(contentsOf: SharedTestData.rules.appendingPathComponent(file), encoding: .utf8), file)
        }
    }

    /// Malformed documents: tomllib rejects each, and so do we, with the line of the problem.
    static let invalid: [(text: String, line: Int)] = [
        ("[\u{FFFD}etadata]\nx = 1", 1),                 // fuzz finding: toml++ asserted in parse_key
        ("[rule]\nname = 'x'\n\n[ é]\n", 4),
        ("a = 1\nrefs = [\n  \"x\",\n}\n", 4),           // fuzz finding: toml++ asserted in parse_value
        ("a = [1, 2", 1),
        ("a = 1\na = 2", 2),
        ("[t]\n[t]", 2),
        ("[fruit]\napple.color = 'red'\n[fruit.apple]", 3),
        ("a = { b = 1 }\n[a]", 2),
        ("a = { b = 1 }\na.c = 2", 2),
        ("a = [1]\n[[a]]", 2),
        ("a = \"unterminated\nb = 1", 1),
        ("a = \"\\q\"", 1),
        ("a = 01", 1),
        ("a = 1__0", 1),
        ("a = 1.", 1),
        ("a = .5", 1),
        ("a = 1979-13-27Tx", 1),
        ("a = tru", 1),
        ("a = 1 b = 2", 1),
        ("= 1", 1),
        ("a.\"\"\"b\"\"\" = 1", 1),
        ("a = { b = 1,\n c = 2 }", 1),
        ("a = \"\u{1}\"", 1),
        ("x = 1 # comment \u{7F}", 1),
        ("a = 99999999999999999999", 1),                 // TOML's integers are 64-bit (tomllib's are unbounded)
        ("a = " + String(repeating: "[", count: 100) + String(repeating: "]", count: 100), 1),
    ]

    @Test(arguments: invalid.indices)
    func malformedDocumentsAreErrorsNamingTheLine(index: Int) throws {
        let (text, line) = Self.invalid[index]
        // Two are ours alone: tomllib reads integers of any size and nests arrays without a limit (ours: 64).
        if index < Self.invalid.count - 2 {
            #expect(try tomllib(text) == nil, "tomllib accepts invalid document \(index)")
        }
        let error = #expect(throws: TOMLParseError.self) { try TOMLTable(parsing: text) }
        #expect(error?.line == line, "document \(index): \(String(describing: error))")
    }

    @Test func ruleFilesReportTheLineOfMalformedTOML() {
        let error = #expect(throws: RuleLoadError.self) { try DetectionRule.parse(toml: "[rule]\nname = 'x'\n[ é]\n", file: "fuzz.toml") }
        #expect(error?.line == 3)
        #expect(error?.description.hasPrefix("fuzz.toml:3: malformed TOML: ") == true)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
