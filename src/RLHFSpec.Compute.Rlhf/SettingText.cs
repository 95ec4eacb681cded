namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The text forms of the typed settings, read once where text comes in (the JSON config, the command line) and written
/// back where text goes out (config.json, summaries). A bad value is one line naming the key and the allowed values.
/// </summary>
public static class SettingText
{
    /// <summary><c>grpo</c> or <c>ppo</c> (exactly); errors name <paramref name="key"/>.</summary>
    public static RlhfAlgorithm Algorithm(string value, string key = "algorithm") => value switch
    {
        "grpo" => RlhfAlgorithm.Grpo,
        "ppo" => RlhfAlgorithm.Ppo,
        _ => throw new ArgumentException($"{key}: '{value}' is not one of grpo, ppo"),
    };

    public static string Name(RlhfAlgorithm algorithm) => algorithm switch
    {
        RlhfAlgorithm.Grpo => "grpo",
        RlhfAlgorithm.Ppo => "ppo",
        _ => throw new ArgumentOutOfRangeException(nameof(algorithm), algorithm, null),
    };

    /// <summary><c>on</c> or <c>off</c> (exactly); errors name <paramref name="key"/>.</summary>
    public static bool OnOff(string value, string key) => value switch
    {
        "on" => true,
        "off" => false,
        _ => throw new ArgumentException($"{key}: '{value}' is not one of on, off"),
    };

    public static string OnOff(bool on) => on ? "on" : "off";
}
