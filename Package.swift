// swift-tools-version: 6.0
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
    ],
    targets: [
        .target(name: "CKernels", cSettings: kernelFlags),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS"),
        .target(name: "CCUDA", cSettings: [.unsafeFlags(["-O2"])], linkerSettings: [.linkedLibrary("dl")]),
        .target(
            name: "GPTQKit",
            dependencies: ["CKernels", "COpenBLAS", "CCUDA"]
        ),
        // The GPU's checks and benchmarks (gpu-check, gpu-bench), apart from the product.
        .target(name: "GPTQChecks", dependencies: ["GPTQKit", "CCUDA"]),
        .executableTarget(
            name: "gptq",
            dependencies: ["GPTQKit", "GPTQChecks", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The parsers' fuzz targets: scripts/fuzz.sh builds this with -sanitize=fuzzer -DFUZZING
        // into .build-fuzz; a plain build replays inputs (crash files) through the same code.
        .target(name: "CLibFuzzer"),
        .executableTarget(name: "gptq-fuzz", dependencies: ["GPTQKit", "CLibFuzzer"]),
        .testTarget(
            name: "GPTQKitTests",
            dependencies: ["GPTQKit", "GPTQChecks"]
        ),
    ]
)
