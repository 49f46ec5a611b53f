// swift-tools-version: 6.1
import PackageDescription

// Kernels are compiled with optimisation and AVX2/FMA/F16C even in debug builds:
// the tests run real models, and -O0 SIMD code would make them crawl.
let kernelFlags: [CSetting] = [.unsafeFlags(["-O3", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=fast"])]

let package = Package(
    name: "swift-gptq",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "GPTQKit", targets: ["GPTQKit"]),
        .executable(name: "gptq", targets: ["gptq"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // No traits: the default FullFoundation and ConfigurationSupport would link all of Foundation (ICU included).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
    ],
    targets: [
        .target(name: "CKernels", cSettings: kernelFlags),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS"),
        .target(name: "CCUDA", cSettings: [.unsafeFlags(["-O2"])], linkerSettings: [.linkedLibrary("dl")]),
        .target(
            name: "GPTQKit",
            dependencies: ["CKernels", "COpenBLAS", "CCUDA"]
        ),
        // The OpenAI-compatible server: kept out of GPTQKit so the library needs no server packages.
        .target(
            name: "GPTQServe",
            dependencies: [
                "GPTQKit",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // The GPU's checks and benchmarks (gpu-check, gpu-bench), apart from the product.
        .target(name: "GPTQChecks", dependencies: ["GPTQKit", "CCUDA"]),
        .executableTarget(
            name: "gptq",
            dependencies: [
                "GPTQKit", "GPTQChecks", "GPTQServe",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The parsers' fuzz targets: scripts/fuzz.sh builds this with -sanitize=fuzzer -DFUZZING
        // into .build-fuzz; a plain build replays inputs (crash files) through the same code.
        .target(name: "CLibFuzzer"),
        .executableTarget(name: "gptq-fuzz", dependencies: ["GPTQKit", "CLibFuzzer"]),
        .testTarget(
            name: "GPTQKitTests",
            dependencies: ["GPTQKit", "GPTQChecks"]
        ),
        .testTarget(
            name: "GPTQServeTests",
            dependencies: ["GPTQServe", "GPTQKit"]
        ),
    ]
)
