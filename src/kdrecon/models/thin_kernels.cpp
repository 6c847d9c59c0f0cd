// The two thin convolutions of a DC-CNN block, 1→32 (with or without its ReLU) and 32→1, and the sums
// that give their weight gradients, as CPU kernels for bf16 inference and training, and attention
// transfer's channel energy of a 32-channel feature: see thin_kernels.py for
// the formulas, the layouts and why. Built on first use by
// torch.utils.cpp_extension; the AVX-512 BF16 code is compiled for that instruction set alone (function
// target attributes) and chosen at run time, so the library builds and runs on any CPU: elsewhere, and for
// shapes or dtypes the kernels do not handle, each operator is the same computation through ATen.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KDRECON_AVX512_BF16 1
#define KDRECON_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))
#endif

namespace {

// Hidden width the kernels handle: one 512-bit register holds 32 bf16 channels of a pixel.
constexpr int64_t kChannels = 32;
// Rows per task of a parallel loop.
constexpr int64_t kRowsPerTask = 8;

bool cpu_has_bf16_dot_products() {
#ifdef KDRECON_AVX512_BF16
  static const bool has = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
  return has;
#else
  return false;
#endif
}

void check_convolution(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias, const char* op) {
  TORCH_CHECK(input.dim() == 4, op, ": input must be (B, C, H, W), got ", input.dim(), " dimensions");
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == input.size(1) && weight.size(2) == 3 && weight.size(3) == 3,
              op, ": weight must be (out, ", input.size(1), ", 3, 3), got ", weight.sizes());
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), op, ": bias must be (", weight.size(0), "), got ",
              bias.sizes());
}

#ifdef KDRECON_AVX512_BF16

// The bit patterns of a bf16 tensor's elements.
const uint16_t* bits(const at::Tensor& tensor) { return reinterpret_cast<const uint16_t*>(tensor.data_ptr()); }

// bf16 of a float, rounded to nearest even (as _mm512_cvtneps_pbh rounds).
uint16_t round_to_bf16(float value) {
  if (value != value) return 0x7fc0;  // a NaN stays a NaN (rounding could carry its payload into infinity)
  uint32_t word;
  std::memcpy(&word, &value, sizeof word);
  word += 0x7fff + ((word >> 16) & 1);
  return static_cast<uint16_t>(word >> 16);
}

// --- 1→32 convolution and ReLU ---------------------------------------------------------------------
//
// vdpbf16ps multiplies pairs of bf16 and adds both products to a float32 lane. A pixel's 32 outputs are
// two registers of 16 channels; each of the three kernel rows is two pairs of taps, (0, 1) and (2, a zero
// weight), and the two image values of a pair are adjacent in the padded image, so one 32-bit broadcast
// feeds a pair to every channel: 12 dot products per pixel, four pixels at a time for independent chains.

constexpr int kImagePixels = 4;
// Padding of the image copy: one column left, and on the right the taps read past the last pixel plus a
// block of pixels run past the row's end (their results are not stored).
constexpr int64_t kImageRightPadding = 2 + kImagePixels;

KDRECON_TARGET void image_rows(const uint16_t* padded, int64_t padded_width, const __m512bh* pairs, const float* bias,
                               bool relu, uint16_t* out, int64_t first_row, int64_t end_row, int64_t width) {
  const __m512 bias_low = _mm512_loadu_ps(bias), bias_high = _mm512_loadu_ps(bias + 16), zero = _mm512_setzero_ps();
  for (int64_t y = first_row; y < end_row; ++y) {
    for (int64_t x0 = 0; x0 < width; x0 += kImagePixels) {
      __m512 low[kImagePixels], high[kImagePixels];
#pragma GCC unroll 4
      for (int p = 0; p < kImagePixels; ++p) low[p] = bias_low, high[p] = bias_high;
#pragma GCC unroll 3
      for (int row = 0; row < 3; ++row) {
        const __m512bh* weights = pairs + row * 4;
#pragma GCC unroll 4
        for (int p = 0; p < kImagePixels; ++p) {
          const uint16_t* at = padded + (y + row) * padded_width + x0 + p;
          int32_t first;
          std::memcpy(&first, at, sizeof first);
          // Tap 2 alone, its partner zero (not the next pixel, which an infinity would make 0 · inf = NaN).
          const __m512bh taps01 = (__m512bh)_mm512_set1_epi32(first), taps2 = (__m512bh)_mm512_set1_epi32(at[2]);
          low[p] = _mm512_dpbf16_ps(low[p], taps01, weights[0]);
          high[p] = _mm512_dpbf16_ps(high[p], taps01, weights[1]);
          low[p] = _mm512_dpbf16_ps(low[p], taps2, weights[2]);
          high[p] = _mm512_dpbf16_ps(high[p], taps2, weights[3]);
        }
      }
      const int64_t pixels = std::min<int64_t>(kImagePixels, width - x0);
      for (int64_t p = 0; p < pixels; ++p) {
        // max(0, x) returns x where x is NaN, as torch.relu does.
        if (relu) low[p] = _mm512_max_ps(zero, low[p]), high[p] = _mm512_max_ps(zero, high[p]);
        const __m512bh result = _mm512_cvtne2ps_pbh(high[p], low[p]);
        _mm512_storeu_si512(out + (y * width + x0 + p) * kChannels, (__m512i)result);
      }
    }
  }
}

// Weights (32, 1, 3, 3) bf16 as the 12 registers image_rows reads: for kernel row r, pair k and half h,
// register r * 4 + k * 2 + h holds (w[c, r, 2k], w[c, r, 2k + 1] or 0) for the 16 channels c of half h.
void pack_image_pairs(const at::Tensor& weight, uint16_t* pairs) {
  const uint16_t* w = bits(weight);
  for (int row = 0; row < 3; ++row)
    for (int k = 0; k < 2; ++k)
      for (int c = 0; c < kChannels; ++c) {
        uint16_t* lane = pairs + (row * 4 + k * 2 + c / 16) * kChannels + 2 * (c % 16);
        lane[0] = w[c * 9 + row * 3 + 2 * k];
        lane[1] = k == 0 ? w[c * 9 + row * 3 + 1] : 0;
      }
}

at::Tensor image_convolution_fast(const at::Tensor& image, const at::Tensor& weight, const at::Tensor& bias, bool relu) {
  const int64_t batch = image.size(0), height = image.size(2), width = image.size(3);
  const int64_t padded_width = width + 1 + kImageRightPadding;
  const at::Tensor source = image.contiguous();
  std::vector<uint16_t> padded(batch * (height + 2) * padded_width, 0);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t y = 0; y < height; ++y)
      std::memcpy(&padded[((b * (height + 2)) + y + 1) * padded_width + 1], bits(source) + (b * height + y) * width,
                  width * sizeof(uint16_t));
  alignas(64) uint16_t pairs[3 * 4 * kChannels];
  pack_image_pairs(weight.to(at::kBFloat16).contiguous(), pairs);
  const at::Tensor b32 = bias.to(at::kBFloat16).to(at::kFloat).contiguous();  // a bf16 bias, as autocast gives oneDNN
  at::Tensor out = at::empty({batch, kChannels, height, width}, image.options().memory_format(at::MemoryFormat::ChannelsLast));
  uint16_t* destination = reinterpret_cast<uint16_t*>(out.data_ptr());
  at::parallel_for(0, batch * height, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end;) {  // a task's rows may span images
      const int64_t b = row / height, stop = std::min(end, (b + 1) * height);
      image_rows(padded.data() + b * (height + 2) * padded_width, padded_width, reinterpret_cast<const __m512bh*>(pairs),
                 b32.data_ptr<float>(), relu, destination + b * height * width * kChannels, row - b * height,
                 stop - b * height, width);
      row = stop;
    }
  });
  return out;
}

// --- 32→1 convolution ------------------------------------------------------------------------------
//
// An output pixel is nine dot products of a 32-channel feature pixel with a tap's 32 weights (one
// vdpbf16ps each into 16 float32 lanes) and a sum of the 16 lanes. Sixteen pixels of a row run at once and
// their 16 registers are summed together by a transposing tree, one register of 16 results.

constexpr int kFeaturePixels = 16;

// out[i] = sum of the 16 lanes of acc[i], i = 0..15.
KDRECON_TARGET __m512 lane_sums(const __m512* acc) {
  __m512 pairs[8], quads[4], halves[2];
  for (int k = 0; k < 8; ++k)  // within each 128-bit lane: (a0+a2, b0+b2, a1+a3, b1+b3)
    pairs[k] = _mm512_add_ps(_mm512_unpacklo_ps(acc[2 * k], acc[2 * k + 1]), _mm512_unpackhi_ps(acc[2 * k], acc[2 * k + 1]));
  for (int k = 0; k < 4; ++k) {  // each 128-bit lane: its sums of acc[4k .. 4k+3]
    const __m512d a = _mm512_castps_pd(pairs[2 * k]), b = _mm512_castps_pd(pairs[2 * k + 1]);
    quads[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  for (int k = 0; k < 2; ++k)  // add the 128-bit lanes pairwise, then again
    halves[k] = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2 * k], quads[2 * k + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(quads[2 * k], quads[2 * k + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(halves[0], halves[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(halves[0], halves[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// One output pixel, zero padding by bounds checks: the two border columns and a row's last few pixels.
KDRECON_TARGET float feature_pixel(const uint16_t* features, const __m512bh* taps, int64_t y, int64_t x,
                                   int64_t height, int64_t width) {
  __m512 acc = _mm512_setzero_ps();
  for (int row = 0; row < 3; ++row) {
    const int64_t yy = y + row - 1;
    if (yy < 0 || yy >= height) continue;
    for (int column = 0; column < 3; ++column) {
      const int64_t xx = x + column - 1;
      if (xx < 0 || xx >= width) continue;
      const __m512bh pixel = (__m512bh)_mm512_loadu_si512(features + (yy * width + xx) * kChannels);
      acc = _mm512_dpbf16_ps(acc, pixel, taps[row * 3 + column]);
    }
  }
  return _mm512_reduce_add_ps(acc);
}

KDRECON_TARGET void feature_rows(const uint16_t* features, const __m512bh* taps, float bias, uint16_t* out,
                                 int64_t first_row, int64_t end_row, int64_t height, int64_t width) {
  const __m512 bias_vector = _mm512_set1_ps(bias);
  for (int64_t y = first_row; y < end_row; ++y) {
    // Kernel rows inside the image; interior columns 1 .. width - 2 need no other check.
    const int first = y == 0 ? 1 : 0, end = y == height - 1 ? 2 : 3;
    out[y * width] = round_to_bf16(feature_pixel(features, taps, y, 0, height, width) + bias);
    int64_t x = 1;
    for (; x + kFeaturePixels <= width - 1; x += kFeaturePixels) {
      __m512 acc[kFeaturePixels];
#pragma GCC unroll 16
      for (int p = 0; p < kFeaturePixels; ++p) acc[p] = _mm512_setzero_ps();
      for (int row = first; row < end; ++row) {
        const uint16_t* left = features + ((y + row - 1) * width + x - 1) * kChannels;
#pragma GCC unroll 3
        for (int column = 0; column < 3; ++column) {
          const __m512bh tap = taps[row * 3 + column];
#pragma GCC unroll 16
          for (int p = 0; p < kFeaturePixels; ++p)
            acc[p] = _mm512_dpbf16_ps(acc[p], (__m512bh)_mm512_loadu_si512(left + (p + column) * kChannels), tap);
        }
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + y * width + x),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_add_ps(lane_sums(acc), bias_vector)));
    }
    for (; x < width; ++x) out[y * width + x] = round_to_bf16(feature_pixel(features, taps, y, x, height, width) + bias);
  }
}

at::Tensor feature_convolution_fast(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& bias) {
  const int64_t batch = features.size(0), height = features.size(2), width = features.size(3);
  const at::Tensor source = features.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor w = weight.to(at::kBFloat16).contiguous();
  alignas(64) uint16_t taps[9 * kChannels];  // tap t's 32 channel weights, in a pixel's channel order
  for (int t = 0; t < 9; ++t)
    for (int c = 0; c < kChannels; ++c) taps[t * kChannels + c] = bits(w)[c * 9 + t];
  const float b = bias.to(at::kBFloat16).to(at::kFloat).item<float>();
  at::Tensor out = at::empty({batch, 1, height, width}, features.options());
  uint16_t* destination = reinterpret_cast<uint16_t*>(out.data_ptr());
  at::parallel_for(0, batch * height, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end;) {
      const int64_t image = row / height, stop = std::min(end, (image + 1) * height);
      feature_rows(bits(source) + image * height * width * kChannels, reinterpret_cast<const __m512bh*>(taps), b,
                   destination + image * height * width, row - image * height, stop - image * height, height, width);
      row = stop;
    }
  });
  return out;
}

// --- Weight gradients: sums over pixels of a 32-channel map times a shifted one-channel image ---------
//
// sums[c, i, j] = Σ_p features[p, c] · image[p + (i − 1, j − 1)] (zero outside) and totals[c] = Σ_p features[p, c]:
// the weight and bias gradients of the 1→32 convolution (features = its output gradient, image = its input)
// and, with the taps flipped, the weight gradient of the 32→1 convolution (features = its input, image = its
// output gradient). Pixels go in pairs (x, x + 1): the two feature pixels interleaved channel by channel
// (vpunpck{l,h}wd, within each 128-bit lane) against the two adjacent image values of each tap as one
// 32-bit broadcast, nine taps and the total in 20 float32 registers held over a task's rows.

constexpr int kSumRegisters = 20;  // 9 taps × 2 halves of the channels, and the totals' 2

KDRECON_TARGET void tap_sum_rows(const uint16_t* features, const uint16_t* padded, int64_t padded_width,
                                 int64_t first_row, int64_t end_row, int64_t width, float* partial) {
  __m512 acc[kSumRegisters];
  for (int k = 0; k < kSumRegisters; ++k) acc[k] = _mm512_loadu_ps(partial + k * 16);
  const __m512bh ones = (__m512bh)_mm512_set1_epi16(0x3f80);  // bf16 1.0: the totals
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t y = first_row; y < end_row; ++y) {
    for (int64_t x = 0; x < width; x += 2) {
      const __m512i left = _mm512_loadu_si512(features + (y * width + x) * kChannels);
      const __m512i right = x + 1 < width ? _mm512_loadu_si512(features + (y * width + x + 1) * kChannels) : zero;
      const __m512bh low = (__m512bh)_mm512_unpacklo_epi16(left, right), high = (__m512bh)_mm512_unpackhi_epi16(left, right);
#pragma GCC unroll 3
      for (int i = 0; i < 3; ++i) {
        const uint16_t* row = padded + (y + i) * padded_width + x;
#pragma GCC unroll 3
        for (int j = 0; j < 3; ++j) {
          int32_t pair = row[j];  // past an odd width's last pixel its partner is zero (no 0 · inf)
          if (x + 1 < width) std::memcpy(&pair, row + j, sizeof pair);
          const __m512bh values = (__m512bh)_mm512_set1_epi32(pair);
          acc[(i * 3 + j) * 2] = _mm512_dpbf16_ps(acc[(i * 3 + j) * 2], low, values);
          acc[(i * 3 + j) * 2 + 1] = _mm512_dpbf16_ps(acc[(i * 3 + j) * 2 + 1], high, values);
        }
      }
      acc[18] = _mm512_dpbf16_ps(acc[18], low, ones);
      acc[19] = _mm512_dpbf16_ps(acc[19], high, ones);
    }
  }
  for (int k = 0; k < kSumRegisters; ++k) _mm512_storeu_ps(partial + k * 16, acc[k]);
}

// The channel of float32 lane `lane` of the low (half 0) or high (half 1) interleaved register.
int interleaved_channel(int half, int lane) { return (lane / 4) * 8 + half * 4 + lane % 4; }

std::tuple<at::Tensor, at::Tensor> tap_channel_sums_fast(const at::Tensor& features, const at::Tensor& image) {
  const int64_t batch = features.size(0), height = features.size(2), width = features.size(3);
  const at::Tensor source = features.contiguous(at::MemoryFormat::ChannelsLast), values = image.contiguous();
  // One column left and top, two right (the pair of the last tap past an odd width's last pixel).
  const int64_t padded_width = width + 3;
  std::vector<uint16_t> padded(batch * (height + 2) * padded_width, 0);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t y = 0; y < height; ++y)
      std::memcpy(&padded[(b * (height + 2) + y + 1) * padded_width + 1], bits(values) + (b * height + y) * width,
                  width * sizeof(uint16_t));
  const int64_t rows = batch * height, tasks = std::min<int64_t>(at::get_num_threads(), rows);
  std::vector<float> partials(tasks * kSumRegisters * 16, 0.0f);
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t first = rows * task / tasks, stop = rows * (task + 1) / tasks;
      for (int64_t row = first; row < stop;) {
        const int64_t b = row / height, image_stop = std::min(stop, (b + 1) * height);
        tap_sum_rows(bits(source) + b * height * width * kChannels, padded.data() + b * (height + 2) * padded_width,
                     padded_width, row - b * height, image_stop - b * height, width,
                     partials.data() + task * kSumRegisters * 16);
        row = image_stop;
      }
    }
  });
  at::Tensor sums = at::zeros({kChannels, 3, 3}, features.options().dtype(at::kFloat));
  at::Tensor totals = at::zeros({kChannels}, features.options().dtype(at::kFloat));
  float* s = sums.data_ptr<float>();
  float* t = totals.data_ptr<float>();
  for (int64_t task = 0; task < tasks; ++task)
    for (int k = 0; k < kSumRegisters; ++k)
      for (int lane = 0; lane < 16; ++lane) {
        const float value = partials[(task * kSumRegisters + k) * 16 + lane];
        const int channel = interleaved_channel(k % 2, lane);
        if (k < 18) s[channel * 9 + k / 2] += value;
        else t[channel] += value;
      }
  return {sums, totals};
}

// --- channel energy ----------------------------------------------------------------------------------
//
// energy[p] = Σ_c features[p, c]² in float32: attention transfer's map before it is normalised. One
// register holds a pixel's 32 channels; its dot product with itself gives 16 sums of two squares (each
// product exact in float32), added across the lanes. Read once, where the ATen reduction in float32 first
// wrote a float32 copy of the features.

KDRECON_TARGET void energy_pixels(const uint16_t* features, float* out, int64_t first, int64_t end) {
  for (int64_t p = first; p < end; ++p) {
    const __m512bh f = (__m512bh)_mm512_loadu_si512(features + p * kChannels);
    out[p] = _mm512_reduce_add_ps(_mm512_dpbf16_ps(_mm512_setzero_ps(), f, f));
  }
}

// Pixels per task of the channel energy's parallel loop.
constexpr int64_t kEnergyPixelsPerTask = 4096;

at::Tensor channel_energy_fast(const at::Tensor& features) {
  const at::Tensor source = features.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor energy = at::empty({features.size(0), features.size(2), features.size(3)}, features.options().dtype(at::kFloat));
  float* out = energy.data_ptr<float>();
  at::parallel_for(0, energy.numel(), kEnergyPixelsPerTask,
                   [&](int64_t begin, int64_t end) { energy_pixels(bits(source), out, begin, end); });
  return energy;
}

#endif  // KDRECON_AVX512_BF16

// `tensor` in a fresh tensor of `format`'s exact strides, as the fast kernels and the shape functions
// (thin_kernels.py) give them: contiguous() keeps any strides of size-1 dimensions.
at::Tensor with_layout(const at::Tensor& tensor, at::MemoryFormat format) {
  return at::empty(tensor.sizes(), tensor.options().memory_format(format)).copy_(tensor);
}

bool bf16_fast_path(const at::Tensor& input, int64_t in_channels, int64_t out_channels, const at::Tensor& weight) {
  return cpu_has_bf16_dot_products() && input.device().is_cpu() && input.scalar_type() == at::kBFloat16 &&
         input.size(1) == in_channels && weight.size(0) == out_channels && input.numel() > 0;
}

at::Tensor image_convolution_with(const at::Tensor& image, const at::Tensor& weight, const at::Tensor& bias, bool relu,
                                  const char* op) {
  check_convolution(image, weight, bias, op);
#ifdef KDRECON_AVX512_BF16
  if (bf16_fast_path(image, 1, kChannels, weight)) return image_convolution_fast(image, weight, bias, relu);
#endif
  at::Tensor out = at::conv2d(image, weight.to(image.scalar_type()), bias.to(image.scalar_type()), 1, 1);
  return with_layout(relu ? at::relu(out) : out, at::MemoryFormat::ChannelsLast);
}

at::Tensor image_convolution_relu(const at::Tensor& image, const at::Tensor& weight, const at::Tensor& bias) {
  return image_convolution_with(image, weight, bias, true, "kdrecon::image_convolution_relu");
}

at::Tensor image_convolution(const at::Tensor& image, const at::Tensor& weight, const at::Tensor& bias) {
  return image_convolution_with(image, weight, bias, false, "kdrecon::image_convolution");
}

at::Tensor feature_to_image_convolution(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& bias) {
  check_convolution(features, weight, bias, "kdrecon::feature_to_image_convolution");
#ifdef KDRECON_AVX512_BF16
  if (bf16_fast_path(features, kChannels, 1, weight)) return feature_convolution_fast(features, weight, bias);
#endif
  return with_layout(at::conv2d(features, weight.to(features.scalar_type()), bias.to(features.scalar_type()), 1, 1),
                     at::MemoryFormat::Contiguous);
}

std::tuple<at::Tensor, at::Tensor> tap_channel_sums(const at::Tensor& features, const at::Tensor& image) {
  TORCH_CHECK(features.dim() == 4 && image.dim() == 4 && image.size(1) == 1 && features.size(0) == image.size(0) &&
                  features.size(2) == image.size(2) && features.size(3) == image.size(3),
              "kdrecon::tap_channel_sums: features (B, C, H, W) and image (B, 1, H, W) of the same B, H, W expected, got ",
              features.sizes(), " and ", image.sizes());
#ifdef KDRECON_AVX512_BF16
  if (cpu_has_bf16_dot_products() && features.device().is_cpu() && features.scalar_type() == at::kBFloat16 &&
      image.scalar_type() == at::kBFloat16 && features.size(1) == kChannels && features.numel() > 0)
    return tap_channel_sums_fast(features, image);
#endif
  // sums[c, i, j] = Σ features[c, p] image[p + (i − 1, j − 1)]: a convolution's weight gradient, in float32.
  const at::Tensor f = features.to(at::kFloat), padded = at::constant_pad_nd(image.to(at::kFloat), {1, 1, 1, 1});
  const int64_t height = features.size(2), width = features.size(3);
  std::vector<at::Tensor> taps;
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 3; ++j)
      taps.push_back((f * padded.slice(2, i, i + height).slice(3, j, j + width)).sum({0, 2, 3}));
  return {at::stack(taps, 1).view({features.size(1), 3, 3}), f.sum({0, 2, 3})};
}

at::Tensor channel_energy(const at::Tensor& features) {
  TORCH_CHECK(features.dim() == 4, "kdrecon::channel_energy: features must be (B, C, H, W), got ", features.dim(),
              " dimensions");
#ifdef KDRECON_AVX512_BF16
  if (cpu_has_bf16_dot_products() && features.device().is_cpu() && features.scalar_type() == at::kBFloat16 &&
      features.size(1) == kChannels && features.numel() > 0)
    return channel_energy_fast(features);
#endif
  const at::ScalarType wide = at::promote_types(features.scalar_type(), at::kFloat);
  return at::linalg_vector_norm(features, 2, at::IntArrayRef{1}, false, wide).square();
}

bool fast_thin_kernels() { return cpu_has_bf16_dot_products(); }

}  // namespace

TORCH_LIBRARY(kdrecon, m) {
  m.def("image_convolution_relu(Tensor image, Tensor weight, Tensor bias) -> Tensor");
  m.def("image_convolution(Tensor image, Tensor weight, Tensor bias) -> Tensor");
  m.def("feature_to_image_convolution(Tensor features, Tensor weight, Tensor bias) -> Tensor");
  m.def("tap_channel_sums(Tensor features, Tensor image) -> (Tensor, Tensor)");
  m.def("channel_energy(Tensor features) -> Tensor");
  m.def("fast_thin_kernels() -> bool", &fast_thin_kernels);
}

TORCH_LIBRARY_IMPL(kdrecon, CPU, m) {
  m.impl("image_convolution_relu", &image_convolution_relu);
  m.impl("image_convolution", &image_convolution);
  m.impl("feature_to_image_convolution", &feature_to_image_convolution);
  m.impl("tap_channel_sums", &tap_channel_sums);
  m.impl("channel_energy", &channel_energy);
}
