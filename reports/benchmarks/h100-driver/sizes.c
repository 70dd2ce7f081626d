#include <cuda.h>
#include <stdio.h>
#include <stddef.h>
int main(void) {
  printf("CUlaunchConfig %zu hStream@%zu attrs@%zu numAttrs@%zu; CUlaunchAttribute %zu value@%zu; PSS id %d; INVALID_CONTEXT %d; CUDA_VERSION %d\n",
         sizeof(CUlaunchConfig), offsetof(CUlaunchConfig, hStream), offsetof(CUlaunchConfig, attrs), offsetof(CUlaunchConfig, numAttrs),
         sizeof(CUlaunchAttribute), offsetof(CUlaunchAttribute, value), (int)CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
         (int)CUDA_ERROR_INVALID_CONTEXT, CUDA_VERSION);
  return 0;
}
