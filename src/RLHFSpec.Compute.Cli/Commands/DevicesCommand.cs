using System.CommandLine;
using RLHFSpec.Compute.Engine;
using Spectre.Console;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary><c>rlhfspec devices</c>: the compute devices found, with the limits the kernels size themselves from.</summary>
internal static class DevicesCommand
{
    public static Command Create()
    {
        var command = new Command("devices", "List the compute devices found (CPU backend and every Vulkan device)");
        command.SetAction(_ => Run());
        return command;
    }

    private static int Run()
    {
        var devices = Devices.List(out var vulkanError);
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumns("id", "name", "type", "subgroup", "max binding", "shared mem", "memory", "driver");
        foreach (var d in devices)
        {
            var l = d.Limits;
            table.AddRow(
                Markup.Escape(d.Id), Markup.Escape(d.Name), d.Type.Name(),
                l.SubgroupSize.ToString(),
                d.Kind == DeviceKind.Cpu ? "-" : Format.Bytes(l.MaxStorageBufferRange),
                d.Kind == DeviceKind.Cpu ? "-" : Format.Bytes(l.MaxSharedMemoryBytes),
                Format.Bytes(l.DeviceMemoryBytes),
                Markup.Escape(d.Driver));
        }
        AnsiConsole.Write(table);
        if (vulkanError != null) AnsiConsole.MarkupLine($"[yellow]Vulkan:[/] {Markup.Escape(vulkanError)}");
        using var auto = Devices.Open("auto");
        AnsiConsole.MarkupLine($"--device auto selects [bold]{Markup.Escape(auto.Info.Id)}[/] ({Markup.Escape(auto.Info.Name)})");
        return 0;
    }
}
