namespace RLHFSpec.Compute.Model.Formats;

/// <summary>Element types a safetensors file may hold that this project reads. F32/F16/BF16 are read and written;
/// F64/I64/I32 are only read (converted to float) because some checkpoints carry small integer or double buffers.</summary>
public enum TensorDType
{
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
}
