namespace RLHFSpec.Compute.Rlhf;

/// <summary>The config's <c>reallocate</c>: <c>on</c> / <c>off</c> in JSON, a bool in code.</summary>
public sealed class ReallocateConverter() : TextSettingConverter<bool>(v => SettingText.OnOff(v, "reallocate"), SettingText.OnOff);
