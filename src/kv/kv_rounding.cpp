#include "kv/kv_rounding.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "kv/hadamard.h"
#include "sparse/field_storage.h"  // field_fp8_round

namespace vortex {

bool kv_keys_rotated(KvStorage storage, int64_t head_dim) { return storage == KvStorage::kFp8 && is_power_of_two(head_dim); }

void round_kv_row(KvStorage storage, KvRow kind, float* row, int64_t n) {
  if (kind == KvRow::kKey && kv_keys_rotated(storage, n)) {
    hadamard_in_place(row, n);
    round_stored_row(storage, kind, row, n);
    hadamard_in_place(row, n);
    const float inverse = 1.0f / static_cast<float>(n);  // a power of two: exact
    for (int64_t i = 0; i < n; ++i) row[i] *= inverse;
    return;
  }
  round_stored_row(storage, kind, row, n);
}

void round_stored_row(KvStorage storage, KvRow kind, float* row, int64_t n) {
  switch (storage) {
    case KvStorage::kF32:
      return;
    case KvStorage::kBf16:
      for (int64_t i = 0; i < n; ++i) row[i] = bf16_to_f32(f32_to_bf16(row[i]));
      return;
    case KvStorage::kFp8: {
      float amax = 0.0f;
      for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(row[i]));
      if (kind == KvRow::kKey) {
        const float scale = int8_row_scale(amax), inverse = 1.0f / scale;  // powers of two: both exact
        for (int64_t i = 0; i < n; ++i) row[i] = static_cast<float>(int8_key_code(row[i] * inverse)) * scale;
      } else {
        const float scale = fp8_row_scale(amax), inverse = 1.0f / scale;
        for (int64_t i = 0; i < n; ++i) row[i] = field_fp8_round(row[i] * inverse) * scale;
      }
      return;
    }
    case KvStorage::kFp8Tensor:
      for (int64_t i = 0; i < n; ++i) row[i] = field_fp8_round(row[i]);
      return;
  }
}

int64_t kv_row_bytes(KvStorage storage, int64_t head_dim) {
  switch (storage) {
    case KvStorage::kF32: return 4 * head_dim;
    case KvStorage::kBf16: return 2 * head_dim;
    case KvStorage::kFp8: return head_dim + 4;
    case KvStorage::kFp8Tensor: return head_dim;
  }
  return 4 * head_dim;
}

}  // namespace vortex
