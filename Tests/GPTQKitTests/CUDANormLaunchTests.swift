import Testing
@testable import GPTQKit

/// The norm kernel's launch, as CUDASession sizes it (the kernels run against a double
/// reference in `gptq gpu-check` on a GPU, at hidden sizes 576 to 16384).
@Suite struct CUDANormLaunchTests {
    @Test func everyElementHasARegister() throws {
        // (hidden, kernel, threads): a quarter as many threads as elements up to 8192, then
        // 1024 threads keeping 16 elements each.
        let expected: [(Int, String, Int)] = [
            (64, "add_norm", 32), (576, "add_norm", 160), (4096, "add_norm", 1024), (8192, "add_norm", 1024),
            (8200, "add_norm16", 1024), (14848, "add_norm16", 1024), (16384, "add_norm16", 1024),
        ]
        for (hidden, kernel, threads) in expected {
            let launch = try #require(CUDASession.normLaunch(hidden: hidden))
            #expect(launch.kernel == kernel && launch.threads == threads, "hidden \(hidden): \(launch)")
            let items = kernel == "add_norm" ? 8 : 16
            #expect(hidden <= items * launch.threads && launch.threads % 32 == 0 && launch.threads <= 1024)
            #expect(DecoderKernels.source.code.contains("void __launch_bounds__(1024) \(kernel)("))
            #expect(DecoderKernels.source.code.contains("add_norm_row<\(items)>"))
        }
        #expect(CUDASession.normLaunch(hidden: 16392) == nil)
    }
}
