import ApplianceCommands

@main
struct FerryAppliance {
    static func main() async {
        await ApplianceCommand.main()
    }
}
