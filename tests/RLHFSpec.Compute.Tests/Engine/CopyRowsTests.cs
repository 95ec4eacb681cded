namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// <c>CopyRows</c> (float rows between two buffers of a backend: a draft model's q into the verification's layout)
/// against a plain C# copy on random rows, bit for bit; rows not named stay as they were; bad input is refused.
/// </summary>
public class CopyRowsTests
{
    [Test]
    public void Rows_land_where_named_bit_for_bit([Values("cpu", "vulkan")] string backendName, [Values(1, 2, 3)] int seed)
    {
        var backend = Backends.Get(backendName);
        var random = new Random(seed);
        int rowElements = 1 + random.Next(300), sourceRows = 5 + random.Next(20), destinationRows = 8 + random.Next(20);
        var source = Enumerable.Range(0, sourceRows * rowElements).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
        var destination = Enumerable.Range(0, destinationRows * rowElements).Select(_ => (float)random.NextDouble() + 2f).ToArray();
        int pairs = random.Next(1, destinationRows);
        var from = Enumerable.Range(0, pairs).Select(_ => random.Next(sourceRows)).ToArray();
        var to = Enumerable.Range(0, destinationRows).OrderBy(_ => random.Next()).Take(pairs).ToArray();
        var expected = (float[])destination.Clone();
        for (int p = 0; p < pairs; p++) Array.Copy(source, from[p] * rowElements, expected, to[p] * rowElements, rowElements);
        using var src = backend.Allocate<float>(source.Length, "source");
        using var dst = backend.Allocate<float>(destination.Length, "destination");
        src.Write(source);
        dst.Write(destination);
        backend.CopyRows(src, dst, from, to, rowElements);
        Assert.That(dst.ToArray(), Is.EqualTo(expected));
    }

    [Test]
    public void Bad_input_is_refused([Values("cpu", "vulkan")] string backendName)
    {
        var backend = Backends.Get(backendName);
        using var a = backend.Allocate<float>(40, "a");
        using var b = backend.Allocate<float>(40, "b");
        Assert.That(Assert.Throws<ArgumentException>(() => backend.CopyRows(a, a, [0], [1], 10))!.ParamName, Is.EqualTo("destination"));
        Assert.That(Assert.Throws<ArgumentException>(() => backend.CopyRows(a, b, [0, 1], [2, 2], 10))!.ParamName, Is.EqualTo("destinationRows"));
        Assert.Throws<ArgumentOutOfRangeException>(() => backend.CopyRows(a, b, [4], [0], 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => backend.CopyRows(a, b, [0], [0], 0));
    }
}
