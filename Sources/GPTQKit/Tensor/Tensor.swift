import CKernels

/// Bytes that tensors point into: either an allocation this object owns, or a
/// region of a memory-mapped file that `owner` keeps alive.
public final class TensorStorage: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let byteCount: Int
    private let owner: AnyObject?

    /// A fresh, 64-byte aligned, zero-filled allocation.
    public init(byteCount: Int) {
        base = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 1))
        self.byteCount = byteCount
        owner = nil
    }

    /// Bytes owned by another object (a `MappedFile`). They are never written.
    public init(borrowing pointer: UnsafeRawPointer, byteCount: Int, owner: AnyObject) {
        base = UnsafeMutableRawPointer(mutating: pointer)
        self.byteCount = byteCount
        self.owner = owner
    }

    deinit { if owner == nil { base.deallocate() } }
}

/// A contiguous, row-major tensor of any stored dtype. Compute code reads it through
/// raw pointers; `floats()` gives a float32 copy for code that wants an array.
public struct Tensor: @unchecked Sendable {
    public let dtype: DType
    public let shape: [Int]
    public let storage: TensorStorage
    public let byteOffset: Int

    public init(dtype: DType, shape: [Int], storage: TensorStorage, byteOffset: Int = 0) {
        precondition(byteOffset + shape.reduce(1, *) * dtype.byteSize <= storage.byteCount, "tensor exceeds its storage")
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
        self.byteOffset = byteOffset
    }

    /// A zero-filled tensor.
    public init(zeros shape: [Int], dtype: DType = .f32) {
        self.init(dtype: dtype, shape: shape, storage: TensorStorage(byteCount: shape.reduce(1, *) * dtype.byteSize))
    }

    /// A float32 tensor holding `values`.
    public init(_ values: [Float], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *), "\(values.count) values for shape \(shape)")
        self.init(zeros: shape, dtype: .f32)
        values.withUnsafeBytes { mutableRaw.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    /// A tensor of `dtype` holding the bytes of `values` (Int32, UInt16 bit patterns, ...).
    public init<T>(bitPattern values: [T], dtype: DType, shape: [Int]) {
        precondition(MemoryLayout<T>.stride == dtype.byteSize && values.count == shape.reduce(1, *))
        self.init(zeros: shape, dtype: dtype)
        values.withUnsafeBytes { mutableRaw.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    public var count: Int { shape.reduce(1, *) }
    public var byteCount: Int { count * dtype.byteSize }
    public var rank: Int { shape.count }
    public var raw: UnsafeRawPointer { UnsafeRawPointer(storage.base + byteOffset) }
    /// Writable view; only for tensors that own their storage.
    public var mutableRaw: UnsafeMutableRawPointer { storage.base + byteOffset }

    public func pointer<T>(as type: T.Type) -> UnsafePointer<T> { raw.assumingMemoryBound(to: T.self) }
    public func mutablePointer<T>(as type: T.Type) -> UnsafeMutablePointer<T> { mutableRaw.assumingMemoryBound(to: T.self) }

    /// The same bytes seen with another shape of equal element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(dtype: dtype, shape: newShape, storage: storage, byteOffset: byteOffset)
    }

    /// Rows [start, start+rows) of the first dimension, without a copy.
    public func rows(_ start: Int, _ rows: Int) -> Tensor {
        let rowElements = shape.dropFirst().reduce(1, *)
        var newShape = shape
        newShape[0] = rows
        return Tensor(dtype: dtype, shape: newShape, storage: storage, byteOffset: byteOffset + start * rowElements * dtype.byteSize)
    }

    /// Converts `n` elements starting at element `start` into float32 at `dst`.
    public func readFloats(start: Int = 0, count n: Int, into dst: UnsafeMutablePointer<Float>) {
        precondition(start + n <= count)
        switch dtype {
        case .f32: dst.update(from: pointer(as: Float.self) + start, count: n)
        case .f16: ck_f16_to_f32(pointer(as: UInt16.self) + start, dst, n)
        case .bf16: ck_bf16_to_f32(pointer(as: UInt16.self) + start, dst, n)
        case .f64: for i in 0..<n { dst[i] = Float(pointer(as: Double.self)[start + i]) }
        case .i32: for i in 0..<n { dst[i] = Float(pointer(as: Int32.self)[start + i]) }
        case .i64: for i in 0..<n { dst[i] = Float(pointer(as: Int64.self)[start + i]) }
        case .i16: for i in 0..<n { dst[i] = Float(pointer(as: Int16.self)[start + i]) }
        case .i8: for i in 0..<n { dst[i] = Float(pointer(as: Int8.self)[start + i]) }
        case .u8, .bool: for i in 0..<n { dst[i] = Float(pointer(as: UInt8.self)[start + i]) }
        }
    }

    /// All elements as float32.
    public func floats() -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { readFloats(count: count, into: buffer.baseAddress!) }
            initialized = count
        }
    }

    /// How many elements are NaN or infinite, and the index of the first; (0, nil) for
    /// integer tensors. Reads the exponent bits, so it costs one pass over the bytes.
    public func nonFiniteElements() -> (count: Int, first: Int?) {
        func scan<T: FixedWidthInteger>(_: T.Type, exponent: T) -> (count: Int, first: Int?) {
            let bits = UnsafeBufferPointer(start: pointer(as: T.self), count: count)
            var found = 0
            var first: Int?
            for (i, b) in bits.enumerated() where b & exponent == exponent {
                found += 1
                if first == nil { first = i }
            }
            return (found, first)
        }
        switch dtype {
        case .f64: return scan(UInt64.self, exponent: 0x7FF0_0000_0000_0000)
        case .f32: return scan(UInt32.self, exponent: 0x7F80_0000)
        case .f16: return scan(UInt16.self, exponent: 0x7C00)
        case .bf16: return scan(UInt16.self, exponent: 0x7F80)
        case .i64, .i32, .i16, .i8, .u8, .bool: return (0, nil)
        }
    }

    /// All elements as Int32 (for i32/i64/i16/i8/u8 tensors).
    public func ints() -> [Int32] {
        (0..<count).map { i -> Int32 in
            switch dtype {
            case .i32: return pointer(as: Int32.self)[i]
            case .i64: return Int32(truncatingIfNeeded: pointer(as: Int64.self)[i])
            case .i16: return Int32(pointer(as: Int16.self)[i])
            case .i8: return Int32(pointer(as: Int8.self)[i])
            case .u8, .bool: return Int32(pointer(as: UInt8.self)[i])
            default: return Int32(pointer(as: Float.self)[i])
            }
        }
    }

    /// Elements start..<start+count as float32.
    public func floats(start: Int, count n: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: n) { buffer, initialized in
            readFloats(start: start, count: n, into: buffer.baseAddress!)
            initialized = n
        }
    }

    /// A 2-D tensor's columns in `order` (column i is this tensor's column order[i]), any dtype.
    public func gatheringColumns(_ order: [Int]) -> Tensor {
        precondition(rank == 2)
        let (rows, columns, element) = (shape[0], shape[1], dtype.byteSize)
        let out = Tensor(zeros: [rows, order.count], dtype: dtype)
        for r in 0..<rows {
            let source = raw + r * columns * element, target = out.mutableRaw + r * order.count * element
            for (i, column) in order.enumerated() { (target + i * element).copyMemory(from: source + column * element, byteCount: element) }
        }
        return out
    }

    /// A 2-D tensor's rows in `order` (row i is this tensor's row order[i]), any dtype.
    public func gatheringRows(_ order: [Int]) -> Tensor {
        precondition(rank == 2)
        let width = shape[1] * dtype.byteSize
        let out = Tensor(zeros: [order.count, shape[1]], dtype: dtype)
        for (i, row) in order.enumerated() { (out.mutableRaw + i * width).copyMemory(from: raw + row * width, byteCount: width) }
        return out
    }

    /// A 2-D tensor's transpose, copied in its dtype.
    public func transposed() -> Tensor {
        precondition(rank == 2, "transposed() needs a 2-D tensor")
        let (rows, columns) = (shape[0], shape[1]), size = dtype.byteSize
        let out = Tensor(zeros: [columns, rows], dtype: dtype)
        let source = raw, destination = out.mutableRaw
        for r in 0..<rows {
            for c in 0..<columns {
                (destination + (c * rows + r) * size).copyMemory(from: source + (r * columns + c) * size, byteCount: size)
            }
        }
        return out
    }

    /// A copy converted to `target` (float types round to nearest even).
    public func converted(to target: DType) -> Tensor {
        if target == dtype { return self }
        let values = floats()
        var out = Tensor(zeros: shape, dtype: target)
        switch target {
        case .f32: out = Tensor(values, shape: shape)
        case .f16: ck_f32_to_f16(values, out.mutablePointer(as: UInt16.self), count)
        case .bf16: ck_f32_to_bf16(values, out.mutablePointer(as: UInt16.self), count)
        case .f64: for i in 0..<count { out.mutablePointer(as: Double.self)[i] = Double(values[i]) }
        case .i32: for i in 0..<count { out.mutablePointer(as: Int32.self)[i] = Int32(values[i]) }
        default: preconditionFailure("conversion to \(target) is not supported")
        }
        return out
    }
}
