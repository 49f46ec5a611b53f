// The int8-activation kernels' bodies, compiled once per instruction set by q8_kernels.c,
// which defines Q8_NAME(name) (the path's function names) and the dot-product macros:
//   Q8_DOT_DECLARE(acc)        declares acc, 8 int32 partial sums, zeroed
//   Q8_DOT_U8S8(acc, u, s)     adds, per int32 lane, the 4 products u8 × s8 of its bytes
//   Q8_DOT_S16(acc, a, b)      adds, per int32 lane, the 2 products s16 × s16 of its halves
//   Q8_DOT_END(acc)            acc as 8 int32 sums
// AVX2 has no 4-way byte dot product: it sums maddubs's int16 pairs in an int16 register
// until Q8_DOT_END, which the callers keep below 16 products of ≤ 15 · 127 per int16 lane
// (one unit of 32 channels, at most 4 bits a weight), so that nothing saturates.
// Every function here is compiled under the path's target attribute (#pragma clang attribute).

// One unit of 32 channels (aligned) of 8 columns: Σ q · xi as 8 int32 sums. `words` points
// at the unit's first word of the 8 columns (word i at words[i · 32]); `xa` is the unit's
// activations in the layout ck_gptq_q8_prepare wrote for `bits`.
static inline __attribute__((always_inline)) __m256i Q8_NAME(unit_dot)(const uint32_t *words, const int8_t *xa, int bits) {
    Q8_DOT_DECLARE(acc);
    if (bits == 4 || bits == 2) {
        // Byte b of word i holds 8/bits fields; shifting by j · bits and masking every byte
        // leaves field j of each byte: channels i · 32/bits + b · 8/bits + j, b = 0…3, which
        // ck_gptq_q8_prepare put together as the 4 bytes at xa + (i · 8/bits + j) · 4.
        const __m256i mask = _mm256_set1_epi8((char)((1 << bits) - 1));
        const int per_byte = 8 / bits;
        for (int i = 0; i < bits; i++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(words + (size_t)i * 32));
            for (int j = 0; j < per_byte; j++) {
                const __m256i q = _mm256_and_si256(j == 0 ? v : _mm256_srli_epi32(v, j * bits), mask);
                const __m256i x = q8_broadcast4(xa + (size_t)(i * per_byte + j) * 4);
                Q8_DOT_U8S8(acc, q, x);
            }
        }
    } else if (bits == 8) {
        // maddubs would saturate at 255 · 127 · 2: int16 pairs instead, even bytes (channels
        // 4i, 4i + 2) then odd ones, against xa's int16 pairs in that order.
        const int16_t *xw = (const int16_t *)xa;
        const __m256i mask = _mm256_set1_epi32(0x00FF00FF);
        for (int i = 0; i < 8; i++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(words + (size_t)i * 32));
            const __m256i even = _mm256_and_si256(v, mask), odd = _mm256_and_si256(_mm256_srli_epi32(v, 8), mask);
            Q8_DOT_S16(acc, even, q8_broadcast4(xw + i * 4));
            Q8_DOT_S16(acc, odd, q8_broadcast4(xw + i * 4 + 2));
        }
    } else {
        // 3 bits: fields straddle words, so each is extracted as an int32 and 4 consecutive
        // ones are packed into bytes, against xa in channel order.
        for (int k = 0; k < 32; k += 4) {
            __m256i packed = _mm256_setzero_si256();
            for (int f = 0; f < 4; f++) {
                const int position = (k + f) * 3, index = position >> 5, shift = position & 31;
                __m256i v = _mm256_srli_epi32(_mm256_loadu_si256((const __m256i *)(words + (size_t)index * 32)), shift);
                if (shift > 29) v = _mm256_or_si256(v, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(words + (size_t)(index + 1) * 32)), 32 - shift));
                packed = _mm256_or_si256(packed, _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(7)), 8 * f));
            }
            Q8_DOT_U8S8(acc, packed, q8_broadcast4(xa + k));
        }
    }
    return Q8_DOT_END(acc);
}

// GPTQ GEMV over 8·H columns from o0 for R rows: per unit y-group accumulator += d · Σ q·xi;
// per group y += scale · (acc − zero · Σ x̂). Results to out[r · 32 + lane offset].
static inline __attribute__((always_inline)) void Q8_NAME(gptq_tile)(const ck_gptq_weight *w, const ck_q8_rows *x, int bits, int R,
                                                                     int H, int o0, float *out) {
    const size_t words = (size_t)w->in_features * bits / 32, lane = (size_t)(o0 & 31);
    const uint32_t *tile = w->qweight + (size_t)(o0 >> 5) * words * 32 + lane;
    const float *tile_scales = w->scales + (size_t)(o0 >> 5) * w->groups * 32 + lane;
    const float *tile_zeros = w->zeros + (size_t)(o0 >> 5) * w->groups * 32 + lane;
    __m256 y[4][4];
    for (int r = 0; r < R; r++)
        for (int h = 0; h < H; h++) y[r][h] = _mm256_setzero_ps();
    for (int g = 0; g < w->groups; g++) {
        const int u0 = w->group_start[g] / 32, u1 = w->group_start[g + 1] / 32;
        if (u0 == u1) continue;
        __m256 acc[4][4];
        for (int r = 0; r < R; r++)
            for (int h = 0; h < H; h++) acc[r][h] = _mm256_setzero_ps();
        for (int u = u0; u < u1; u++) {
            const uint32_t *unit = tile + (size_t)u * bits * 32;
            for (int h = 0; h < H; h++) {
                for (int r = 0; r < R; r++) {
                    const __m256i dot = Q8_NAME(unit_dot)(unit + 8 * h, x->arranged + (size_t)r * x->arranged_stride + (size_t)u * 32 * x->arranged_width, bits);
                    acc[r][h] = _mm256_fmadd_ps(_mm256_set1_ps(x->scales[(size_t)r * x->scales_stride + u]), _mm256_cvtepi32_ps(dot), acc[r][h]);
                }
            }
        }
        for (int h = 0; h < H; h++) {
            const __m256 s = _mm256_loadu_ps(tile_scales + (size_t)g * 32 + 8 * h), z = _mm256_loadu_ps(tile_zeros + (size_t)g * 32 + 8 * h);
            for (int r = 0; r < R; r++) {
                const __m256 centred = _mm256_fnmadd_ps(z, _mm256_set1_ps(x->group_sums[(size_t)r * x->group_sums_stride + g]), acc[r][h]);
                y[r][h] = _mm256_fmadd_ps(s, centred, y[r][h]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int h = 0; h < H; h++) _mm256_storeu_ps(out + r * 32 + 8 * h, y[r][h]);
}

// Register budget (16 ymm): R·H y and group accumulators, the unit's field and broadcast;
// 2 rows take the tile as two halves of 16 columns, 3-4 rows as four quarters (re-reading
// the tile's words from L1).
static inline __attribute__((always_inline)) void Q8_NAME(gptq_tile_rows)(const ck_gptq_weight *w, const ck_q8_rows *x, int bits,
                                                                          int rows, int o0, float *out) {
    switch (rows) {
    case 1: Q8_NAME(gptq_tile)(w, x, bits, 1, 4, o0, out); break;
    case 2:
        for (int half = 0; half < 32; half += 16) Q8_NAME(gptq_tile)(w, x, bits, 2, 2, o0 + half, out + half);
        break;
    case 3:
        for (int quarter = 0; quarter < 32; quarter += 8) Q8_NAME(gptq_tile)(w, x, bits, 3, 1, o0 + quarter, out + quarter);
        break;
    default:
        for (int quarter = 0; quarter < 32; quarter += 8) Q8_NAME(gptq_tile)(w, x, bits, 4, 1, o0 + quarter, out + quarter);
        break;
    }
}

static void Q8_NAME(gptq_gemv)(const ck_gptq_weight *w, const ck_q8_rows *x, int col_begin, int col_end, float *y, size_t ldy) {
    float out[4 * 32];
    for (int r0 = 0; r0 < x->rows; r0 += 4) {
        const int rc = x->rows - r0 < 4 ? x->rows - r0 : 4;
        const ck_q8_rows block = q8_rows_from(x, r0);
        for (int o0 = col_begin; o0 < col_end; o0 += 32) {
            switch (w->bits) {
            case 2: Q8_NAME(gptq_tile_rows)(w, &block, 2, rc, o0, out); break;
            case 3: Q8_NAME(gptq_tile_rows)(w, &block, 3, rc, o0, out); break;
            case 4: Q8_NAME(gptq_tile_rows)(w, &block, 4, rc, o0, out); break;
            default: Q8_NAME(gptq_tile_rows)(w, &block, 8, rc, o0, out); break;
            }
            const int n = col_end - o0 < 32 ? col_end - o0 : 32;
            for (int r = 0; r < rc; r++) memcpy(y + (size_t)(r0 + r) * ldy + o0, out + r * 32, (size_t)n * sizeof(float));
        }
    }
}

// Int8 matrix times int8 rows, R rows (constant after inlining) against one weight row:
// maddubs takes unsigned × signed bytes, so the weight's sign moves onto the activation
// (|w| · sign(w)·x = w·x; neither is −128, so |w| and sign(w)·x fit their types).
static inline __attribute__((always_inline)) void Q8_NAME(matrix_row)(const ck_q8_matrix *m, const ck_q8_rows *x, int R, size_t o,
                                                                      float *y, size_t ldy) {
    const size_t in = (size_t)m->in_features, units = in / 32;
    const int8_t *row = m->weight + o * in;
    __m256 acc[4];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (size_t u = 0; u < units; u++) {
        const __m256i wv = _mm256_loadu_si256((const __m256i *)(row + u * 32)), magnitude = _mm256_sign_epi8(wv, wv);
        for (int r = 0; r < R; r++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(x->values + (size_t)r * x->values_stride + u * 32));
            Q8_DOT_DECLARE(dot);
            Q8_DOT_U8S8(dot, magnitude, _mm256_sign_epi8(xv, wv));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(x->scales[(size_t)r * x->scales_stride + u]), _mm256_cvtepi32_ps(Q8_DOT_END(dot)), acc[r]);
        }
    }
    for (int r = 0; r < R; r++) y[(size_t)r * ldy + o] = m->scales[o] * q8_hsum(acc[r]);
}

// Output rows [o_begin, o_end) in blocks whose int8 weights stay in L2 while every group of
// up to 4 activation rows passes over them (one block and one group at decode).
static void Q8_NAME(matrix_gemv)(const ck_q8_matrix *m, const ck_q8_rows *x, int o_begin, int o_end, float *y, size_t ldy) {
    const int block_rows = q8_matrix_block_rows(m);
    for (int b0 = o_begin; b0 < o_end; b0 += block_rows) {
        const int b1 = o_end - b0 < block_rows ? o_end : b0 + block_rows;
        for (int r0 = 0; r0 < x->rows; r0 += 4) {
            const ck_q8_rows block = q8_rows_from(x, r0);
            float *yr = y + (size_t)r0 * ldy;
            switch (x->rows - r0 < 4 ? x->rows - r0 : 4) {
            case 1: for (int o = b0; o < b1; o++) Q8_NAME(matrix_row)(m, &block, 1, (size_t)o, yr, ldy); break;
            case 2: for (int o = b0; o < b1; o++) Q8_NAME(matrix_row)(m, &block, 2, (size_t)o, yr, ldy); break;
            case 3: for (int o = b0; o < b1; o++) Q8_NAME(matrix_row)(m, &block, 3, (size_t)o, yr, ldy); break;
            default: for (int o = b0; o < b1; o++) Q8_NAME(matrix_row)(m, &block, 4, (size_t)o, yr, ldy); break;
            }
        }
    }
}
