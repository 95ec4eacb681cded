namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>
/// One dimension of a symbolic shape: a static size, or a named symbol (batch, sequence length) whose size is
/// only known when the graph runs. Symbols with the same name are the same size.
/// </summary>
public readonly record struct Dim
{
    public long Size { get; }
    public string? Symbol { get; }

    private Dim(long size, string? symbol)
    {
        Size = size;
        Symbol = symbol;
    }

    public static Dim Of(long size)
    {
        if (size < 0) throw new ArgumentException($"dimension size must be non-negative, got {size}", nameof(size));
        return new Dim(size, null);
    }

    public static Dim Sym(string symbol)
    {
        if (string.IsNullOrEmpty(symbol)) throw new ArgumentException("dimension symbol must be non-empty", nameof(symbol));
        return new Dim(0, symbol);
    }

    public bool IsStatic => Symbol is null;

    /// <summary>Symbols the builder invents where it cannot name a size (e.g. Reshape with -1 over symbolic dims).</summary>
    internal bool IsInvented => Symbol is not null && Symbol.StartsWith('?');

    public static implicit operator Dim(long size) => Of(size);
    public static implicit operator Dim(string symbol) => Sym(symbol);

    public override string ToString() => Symbol ?? Size.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
